package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/daemon"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/update"
)

// cmdDemo runs the whole update loop on file-backed slots: a good update
// that is confirmed by its health check, then a bad one that rolls back.
// Everything lives in one work directory, removed and recreated first.
//
// The daemon runs in this process through internal/daemon, exactly as
// `otad serve` wires it, minus the bus: the steps (start, install, reboot)
// are methods of demoBoard, so driving a real `otad serve` over D-Bus
// instead only changes those methods.
func cmdDemo(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "demo", "", "Runs a signed A/B update on file-backed slots through the real daemon code and\nthe bootloader model: install, reboot, health check, commit; then a bad update\nand its rollback. Needs no hardware; everything stays in -dir.")
	dir := fs.String("dir", "demo-work", "work `directory` (removed and recreated)")
	sizeStr := fs.String("slot-size", "64M", "size of each slot file")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("demo: no arguments expected")
	}
	size, err := config.ParseSize(*sizeStr)
	if err != nil || size < 8<<20 {
		return usagef("demo: -slot-size %q: want at least 8M", *sizeStr)
	}
	work, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if work == "/" || work == filepath.Dir(work) {
		return usagef("demo: refusing work directory %s", work)
	}
	b := &demoBoard{e: e, work: work, slotSize: size}
	t0 := time.Now()
	if err := b.run(ctx); err != nil {
		return fmt.Errorf("demo: %w (logs: %s)", err, b.path("otad.log"))
	}
	b.say("\ndone in %.1fs; everything is in %s (otad.log has the daemon's log)", time.Since(t0).Seconds(), work)
	return nil
}

// demoMarker marks a work directory as the demo's own.
const demoMarker = ".otad-demo"

type demoBoard struct {
	e        *Env
	work     string
	slotSize int64
	env      *bootenv.DeviceStore
	log      *logrus.Logger
	logFile  *os.File
	cfg      *config.Config
	booted   string
	boots    int

	d      *daemon.Daemon
	cancel context.CancelFunc

	mu       sync.Mutex
	rebootAt string // why the daemon asked for a reboot, "" if it did not
}

func (b *demoBoard) path(name string) string { return filepath.Join(b.work, name) }

func (b *demoBoard) say(format string, a ...any) { fmt.Fprintf(b.e.Stdout, format+"\n", a...) }

func (b *demoBoard) run(ctx context.Context) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	defer b.teardown()

	b.say("\n== 1. power on: the bootloader model boots the factory image")
	if err := b.powerOn(ctx); err != nil {
		return err
	}
	b.show()

	b.say("\n== 2. build and sign release 2.0, install it into the inactive slot")
	good, err := b.makeBundle(ctx, "2.0", 2, "app=ok")
	if err != nil {
		return err
	}
	if err := b.install(ctx, good); err != nil {
		return err
	}
	b.show()

	b.say("\n== 3. reboot: the trial boot of slot B is confirmed by the health check")
	if err := b.reboot(ctx); err != nil {
		return err
	}
	if st := b.d.Engine.Status(); st.BootSlot != "B" || st.TrialBoot || st.Version != "2.0" {
		return fmt.Errorf("expected committed 2.0 in slot B, status %+v", st)
	}
	b.show()

	b.say("\n== 4. release 2.1 is broken: its application never comes up")
	bad, err := b.makeBundle(ctx, "2.1", 3, "app=crash")
	if err != nil {
		return err
	}
	if err := b.install(ctx, bad); err != nil {
		return err
	}
	b.show()

	b.say("\n== 5. reboot into 2.1: the health check fails, otad falls back and reboots")
	if err := b.reboot(ctx); err != nil {
		return err
	}
	b.show()
	if err := b.reboot(ctx); err != nil {
		return err
	}
	st := b.d.Engine.Status()
	if st.BootSlot != "B" || st.Version != "2.0" {
		return fmt.Errorf("expected to be back on 2.0 in slot B, status %+v", st)
	}
	b.say("   back on slot B, release %s; the bad slot stays marked bad until the next install", st.Version)
	b.show()
	return nil
}

// setup creates slots, env, keys, config and the health check.
func (b *demoBoard) setup(ctx context.Context) error {
	// Only ever delete a directory an earlier demo made (or an empty one).
	if ents, err := os.ReadDir(b.work); err == nil && len(ents) > 0 {
		if _, err := os.Stat(b.path(demoMarker)); err != nil {
			return fmt.Errorf("%s exists and was not made by otad demo; not removing it", b.work)
		}
	}
	if err := os.RemoveAll(b.work); err != nil {
		return err
	}
	if err := os.MkdirAll(b.path("keys"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.path(demoMarker), []byte("made by otad demo; removed by the next run\n"), 0o644); err != nil {
		return err
	}
	b.say("otad demo: A/B update on file-backed slots in %s (no hardware, nothing written outside it)", b.work)
	lf, err := os.Create(b.path("otad.log"))
	if err != nil {
		return err
	}
	b.logFile = lf
	b.log = logrus.New()
	b.log.SetOutput(lf)
	b.log.SetLevel(logrus.DebugLevel)

	// Slots: A holds the factory image 1.0, B is blank.
	for _, n := range []string{"A", "B"} {
		f, err := os.Create(b.path("slot-" + n + ".img"))
		if err != nil {
			return err
		}
		if err := f.Truncate(b.slotSize); err != nil {
			f.Close()
			return err
		}
		f.Close()
	}
	factory := demoImage("1.0", "app=ok", 1, b.slotSize/4)
	if err := os.WriteFile(b.path("slot-A.img"), factory, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(b.path("slot-A.img"), b.slotSize); err != nil {
		return err
	}

	// Redundant U-Boot env: two 16 KiB copies, seeded by otad's env writer.
	for _, n := range []string{"uboot.env", "uboot-redund.env"} {
		if err := os.WriteFile(b.path(n), make([]byte, 0x4000), 0o644); err != nil {
			return err
		}
	}
	envCfg := fmt.Sprintf("# U-Boot env for the demo: redundant, two files\n%s 0x0 0x4000\n%s 0x0 0x4000\n",
		b.path("uboot.env"), b.path("uboot-redund.env"))
	if err := os.WriteFile(b.path("fw_env.config"), []byte(envCfg), 0o644); err != nil {
		return err
	}
	ec, err := bootenv.LoadConfig(b.path("fw_env.config"))
	if err != nil {
		return err
	}
	ec.LockPath = b.path("fw_env.lock") // keep the lock file inside the work dir
	if b.env, err = bootenv.OpenStore(ec); err != nil {
		return err
	}
	env := bootenv.NewEnv()
	for k, v := range map[string]string{boot.VarSlot: "A", boot.VarPrev: "A", boot.VarUpgrade: "0",
		boot.VarBootCount: "0", boot.VarBootLimit: "3", boot.VarAltBootCmd: boot.AltBootCmd} {
		env.Set(k, v)
	}
	if err := b.env.Init(env); err != nil {
		return err
	}

	// Release key: private half for the build host, public half in the keyring.
	var sink bytes.Buffer
	quiet := &Env{Prog: b.e.Prog, Stdin: b.e.Stdin, Stdout: &sink, Stderr: b.e.Stderr}
	if err := cmdBundle(ctx, quiet, []string{"keygen", "--id", "demo-release", "-o", b.path("keys/demo-release")}); err != nil {
		return err
	}

	check := fmt.Sprintf(`#!/bin/sh
# Demo health check: the application in the booted slot must report app=ok.
slot=$(sed -n 's/.*otad\.slot=\([AB]\).*/\1/p' %[1]s/cmdline)
head=$(head -c 48 %[1]s/slot-$slot.img | tr -d '\000')
case "$head" in
  *app=ok*) exit 0 ;;
  *) echo "application in slot $slot did not start ($head)"; exit 1 ;;
esac
`, b.work)
	if err := os.WriteFile(b.path("health-check.sh"), []byte(check), 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`# otad system.conf for the demo (see docs/configuration.md)
[system]
compatible = otad-demo-board
data-dir = %[1]s/data
env-config = %[1]s/fw_env.config
bootlimit = 3
reboot = auto
cmdline = %[1]s/cmdline

[keyring]
directory = %[1]s/keys

[slot.rootfs.0]
name = A
device = %[1]s/slot-A.img
type = file

[slot.rootfs.1]
name = B
device = %[1]s/slot-B.img
type = file

[health]
target =
check = /bin/sh %[1]s/health-check.sh
check-timeout = 10s
timeout = 30s
watchdog = none
`, b.work)
	if err := os.WriteFile(b.path("system.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	if b.cfg, err = config.Load(b.path("system.conf")); err != nil {
		return err
	}
	// Factory provisioning records what slot A holds.
	j, err := journal.New(b.cfg.DataDir)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(factory)
	if err := j.SaveSlot(&journal.SlotRecord{Name: "A", State: journal.SlotGood, Version: "1.0",
		SHA256: hex.EncodeToString(sum[:]), Installed: time.Now(), Activated: time.Now()}); err != nil {
		return err
	}
	b.say("   slots A and B: %d MiB files; slot A holds factory release 1.0", b.slotSize>>20)
	b.say("   U-Boot env: redundant, 2 x 16 KiB (fw_env.config), boot variables otad_slot=A")
	b.say("   keyring: keys/demo-release.pub; health check: health-check.sh; config: system.conf")
	return nil
}

// demoImage is a root file system stand-in: a header line naming the
// release and whether its application works, then compressible filler.
func demoImage(version, app string, seed uint64, n int64) []byte {
	img := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 42))
	for i := range img {
		if i%4096 < 64 {
			img[i] = byte(r.Uint32())
		} else {
			img[i] = byte(i / 4096)
		}
	}
	hdr := fmt.Sprintf("otad-demo rootfs %s %s\n", version, app)
	copy(img, append([]byte(hdr), make([]byte, 48)...)[:48])
	return img
}

func (b *demoBoard) makeBundle(ctx context.Context, version string, secver uint64, app string) (string, error) {
	img := b.path("rootfs-" + version + ".img")
	if err := os.WriteFile(img, demoImage(version, app, secver, b.slotSize*3/8), 0o644); err != nil {
		return "", err
	}
	out := b.path("update-" + version + ".otab")
	args := []string{"create", "--compatible", "otad-demo-board", "--version", version,
		"--security-version", fmt.Sprint(secver), "--image", "rootfs=" + img,
		"--key", b.path("keys/demo-release.key"), "-o", out}
	b.say("   $ %s bundle %s", b.e.Prog, strings.Join(demoRel(b.work, args), " "))
	var sink bytes.Buffer
	if err := cmdBundle(ctx, &Env{Prog: b.e.Prog, Stdin: b.e.Stdin, Stdout: &sink, Stderr: b.e.Stderr}, args); err != nil {
		return "", err
	}
	st, err := os.Stat(out)
	if err != nil {
		return "", err
	}
	b.say("   signed bundle %s: %.1f MiB (image %d MiB, zstd), security version %d",
		filepath.Base(out), float64(st.Size())/(1<<20), b.slotSize*3/8>>20, secver)
	return out, nil
}

func demoRel(work string, args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, work+"/", "")
	}
	return out
}

// powerOn boots through the bootloader model and starts the daemon.
func (b *demoBoard) powerOn(ctx context.Context) error {
	slot, err := bootsim.Step(b.env)
	if err != nil {
		return err
	}
	b.boots++
	b.booted = slot
	st, _ := (&boot.Protocol{Store: b.env}).State()
	trial := ""
	if st.UpgradeAvailable {
		trial = fmt.Sprintf(" (trial boot %d of %d)", st.BootCount, st.BootLimit)
	}
	b.say("   [bootloader] power-on %d: boots slot %s%s", b.boots, slot, trial)
	if err := os.WriteFile(b.path("cmdline"), []byte("console=ttyS0 root=/dev/slot"+slot+" otad.slot="+slot+"\n"), 0o644); err != nil {
		return err
	}
	return b.startDaemon(ctx)
}

func (b *demoBoard) startDaemon(ctx context.Context) error {
	d, err := daemon.New(b.cfg, daemon.Options{Log: b.log, Env: b.env, Rebooter: demoRebooter{b}})
	if err != nil {
		return err
	}
	dctx, cancel := context.WithCancel(ctx)
	b.d, b.cancel = d, cancel
	b.mu.Lock()
	b.rebootAt = ""
	b.mu.Unlock()
	ch, stop := d.Engine.Subscribe()
	defer stop()
	if err := d.Engine.Start(dctx); err != nil {
		return err
	}
	st := d.Engine.Status()
	b.say("   [otad] started on slot %s: %s%s", st.BootSlot, st.Operation, map[bool]string{true: " (trial boot)", false: ""}[st.TrialBoot])
	d.Engine.Wait() // confirmation, if this is a trial boot
	b.relay(ch)
	return nil
}

// relay prints the events worth a line.
func (b *demoBoard) relay(ch <-chan update.Event) {
	for {
		select {
		case ev := <-ch:
			switch ev.Kind {
			case "completed":
				if ev.Result == 0 {
					b.say("   [otad] %s", ev.Message)
				} else {
					b.say("   [otad] failed: %s", ev.Message)
				}
			case "rolledback":
				b.say("   [otad] ROLLED BACK slot %s: %s", ev.Slot, ev.Reason)
			}
		default:
			return
		}
	}
}

func (b *demoBoard) stopDaemon() {
	if b.d == nil {
		return
	}
	b.cancel()
	b.d.Engine.Wait()
	b.d = nil
}

func (b *demoBoard) teardown() {
	b.stopDaemon()
	if b.env != nil {
		b.env.Close()
	}
	if b.logFile != nil {
		b.logFile.Close()
	}
}

func (b *demoBoard) install(ctx context.Context, bundlePath string) error {
	e := b.d.Engine
	ch, stop := e.Subscribe()
	defer stop()
	t0 := time.Now()
	if _, err := e.Install(ctx, bundlePath, nil); err != nil {
		return err
	}
	next := 25
	line := "   [otad] installing into slot " + map[string]string{"A": "B", "B": "A"}[b.booted] + ":"
	var final update.Event
	lastOp := ""
	for ev := range ch {
		if ev.Kind == "operation" && ev.Message != lastOp && ev.Message != update.OpIdle && ev.Message != update.OpPendingReboot {
			line += " " + ev.Message
			lastOp = ev.Message
		}
		if ev.Kind == "progress" {
			if p := e.Status().Progress; p.Percent >= next && p.Total > 0 {
				line += fmt.Sprintf(" %d%%", p.Percent)
				next = (p.Percent/25 + 1) * 25
			}
		}
		if ev.Kind == "completed" {
			final = ev
			break
		}
	}
	e.Wait()
	b.say("%s (%.1fs)", line, time.Since(t0).Seconds())
	if final.Result != 0 {
		return fmt.Errorf("install failed: %s", final.Message)
	}
	b.say("   [otad] %s", final.Message)
	b.mu.Lock()
	why := b.rebootAt
	b.mu.Unlock()
	if why != "" {
		b.say("   [otad] reboot requested (reboot = auto)")
	}
	return nil
}

// reboot restarts the board: daemon stops, bootloader model runs, daemon starts.
func (b *demoBoard) reboot(ctx context.Context) error {
	b.stopDaemon()
	return b.powerOn(ctx)
}

func (b *demoBoard) show() {
	e := b.d.Engine
	st := e.Status()
	for _, s := range st.Slots {
		state := s.State
		if state == "" {
			state = "empty"
		}
		extra := ""
		if s.Name == st.BootSlot {
			extra = "  <- booted"
		}
		if s.State == string(journal.SlotBad) {
			extra += "  (rolled back; reason kept in data/journal.json)"
		}
		ver := s.Version
		if ver == "" {
			ver = "-"
		}
		b.say("   slot %s  %-8s %-5s%s", s.Name, state, ver, extra)
	}
	bs, _ := (&boot.Protocol{Store: b.env}).State()
	fl := "?"
	if f, err := floor.New(b.cfg.DataDir).Get(); err == nil {
		fl = fmt.Sprint(f)
	}
	b.say("   env: otad_slot=%s otad_prev=%s upgrade_available=%d bootcount=%d; anti-rollback floor %s",
		bs.Slot, bs.Prev, map[bool]int{true: 1}[bs.UpgradeAvailable], bs.BootCount, fl)
}

type demoRebooter struct{ b *demoBoard }

func (r demoRebooter) Reboot(context.Context) error {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	r.b.rebootAt = time.Now().Format(time.RFC3339)
	return nil
}
