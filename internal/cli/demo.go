//go:build !otad_device

package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/otadev/otad/internal/board"
	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/privbus"
)

// cmdDemo runs the whole update loop on file-backed slots: a good update
// that is confirmed by its health check, then a bad one that rolls back.
// Everything lives in one work directory, removed and recreated first.
//
// The demo is the board around a real daemon: it starts a private
// dbus-daemon, runs `otad serve` (this binary) as a child process on it for
// every power-on, installs through the D-Bus client exactly as `otactl
// install` does, and reboots by stopping that process, stepping the
// bootloader model and starting it again. The daemon's reboot-command is a
// script that leaves a marker file, which is how the demo sees the request.
func cmdDemo(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "demo", "", "Runs a signed A/B update on file-backed slots: a private dbus-daemon, `otad serve`\nas a child process and the bootloader model: install over D-Bus, reboot, health\ncheck, commit; then a bad update and its rollback. Needs no hardware and\ndbus-daemon (make deps); everything stays in -dir.")
	dir := fs.String("dir", "demo-work", "work `directory` (removed and recreated)")
	sizeStr := fs.String("slot-size", "64M", "size of each slot file")
	boardOnly := fs.Bool("board-only", false, "only write the file-backed board (slots, env, keys/, system.conf) into -dir, removing nothing, and exit (benchmarks)")
	compat := fs.String("compatible", "otad-demo-board", "with -board-only: the board's compatible")
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
	if *boardOnly {
		bd, err := board.Write(board.Spec{Dir: work, SlotSize: size, Compatible: *compat, Reboot: "manual"})
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		fmt.Fprintln(e.Stdout, bd.Config)
		return nil
	}
	if work == "/" || work == filepath.Dir(work) {
		return usagef("demo: refusing work directory %s", work)
	}
	// The bus socket lives in the work dir; sun_path holds 107 bytes.
	if len(work)+len("/bus.sock") > 107 {
		return usagef("demo: work directory path too long for the bus socket (%d bytes); choose a shorter -dir", len(work))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: finding this binary to run as otad serve: %w", err)
	}
	if err := demoCanInstall(); err != nil {
		return err
	}
	b := &demoBoard{e: e, work: work, slotSize: size, exe: exe}
	t0 := time.Now()
	err = b.run(ctx)
	b.teardown()
	if err != nil {
		return fmt.Errorf("demo: %w (logs: %s, %s)", err, b.path("otad.log"), b.path("dbus.log"))
	}
	b.say("\ndone in %.1fs; everything is in %s (otad.log has the daemon's log)", time.Since(t0).Seconds(), work)
	return nil
}

// demoCanInstall fails early where otad serve would refuse the demo's
// Install: it lets only root or members of group otad mutate.
func demoCanInstall() error {
	if os.Geteuid() == 0 {
		return nil
	}
	if u, err := user.Current(); err == nil {
		if gids, err := u.GroupIds(); err == nil {
			for _, gid := range gids {
				if g, err := user.LookupGroupId(gid); err == nil && g.Name == "otad" {
					return nil
				}
			}
		}
	}
	return errors.New("demo: otad serve accepts installs only from root or group otad; run it as root (sudo make demo) or join group otad")
}

// demoMarker marks a work directory as the demo's own.
const demoMarker = ".otad-demo"

// demoWait bounds every wait for a child process or the daemon's state, so
// a broken daemon fails the demo instead of hanging it.
const demoWait = 30 * time.Second

type demoBoard struct {
	e        *Env
	work     string
	slotSize int64
	exe      string // run as `otad serve`
	env      *bootenv.DeviceStore
	logFile  *os.File
	cfg      *config.Config
	booted   string
	boots    int
	policy   string // where the bus policy came from

	bus     *privbus.Bus
	busAddr string
	serve   *demoProc
	client  *dbusapi.Client
}

// demoProc is a child process and the result of waiting for it.
type demoProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

func (b *demoBoard) path(name string) string { return filepath.Join(b.work, name) }

func (b *demoBoard) say(format string, a ...any) { fmt.Fprintf(b.e.Stdout, format+"\n", a...) }

func (b *demoBoard) run(ctx context.Context) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.startBus(ctx); err != nil {
		return err
	}

	b.say("\n== 1. power on: the bootloader model boots the factory image")
	if err := b.powerOn(ctx); err != nil {
		return err
	}
	if err := b.show(ctx); err != nil {
		return err
	}

	b.say("\n== 2. build and sign release 2.0, install it into the inactive slot")
	good, err := b.makeBundle(ctx, "2.0", 2, "app=ok")
	if err != nil {
		return err
	}
	if err := b.install(ctx, good); err != nil {
		return err
	}
	if err := b.show(ctx); err != nil {
		return err
	}

	b.say("\n== 3. reboot: the trial boot of slot B is confirmed by the health check")
	if err := b.reboot(ctx); err != nil {
		return err
	}
	st, err := b.client.Status(ctx)
	if err != nil {
		return err
	}
	if st.BootSlot != "B" || st.TrialBoot || st.Version != "2.0" {
		return fmt.Errorf("expected committed 2.0 in slot B, status %+v", st)
	}
	if err := b.show(ctx); err != nil {
		return err
	}

	b.say("\n== 4. release 2.1 is broken: its application never comes up")
	bad, err := b.makeBundle(ctx, "2.1", 3, "app=crash")
	if err != nil {
		return err
	}
	if err := b.install(ctx, bad); err != nil {
		return err
	}
	if err := b.show(ctx); err != nil {
		return err
	}

	b.say("\n== 5. reboot into 2.1: the health check fails, otad falls back and reboots")
	if err := b.reboot(ctx); err != nil {
		return err
	}
	if err := b.show(ctx); err != nil {
		return err
	}
	if !b.rebootRequested() {
		return errors.New("otad did not ask for a reboot after the failed trial")
	}
	if err := b.reboot(ctx); err != nil {
		return err
	}
	if st, err = b.client.Status(ctx); err != nil {
		return err
	}
	if st.BootSlot != "B" || st.Version != "2.0" {
		return fmt.Errorf("expected to be back on 2.0 in slot B, status %+v", st)
	}
	b.say("   back on slot B, release %s; the bad slot stays marked bad until the next install", st.Version)
	return b.show(ctx)
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
	lf, err := os.OpenFile(b.path("otad.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	b.logFile = lf

	// The board: slot files, redundant env booting A, keys/, check.sh
	// (the booted slot's application must say app=ok), reboot.sh and
	// system.conf — the same fixture the daemon tests and benches use.
	bd, err := board.Write(board.Spec{Dir: b.work, SlotSize: b.slotSize, Reboot: "auto",
		RebootMarker: "reboot-requested", HealthMarker: "app=ok"})
	if err != nil {
		return err
	}
	// Slot A holds the factory image 1.0.
	factory := demoImage("1.0", "app=ok", 1, b.slotSize/4)
	if err := writeSlotImage(bd.SlotA, factory); err != nil {
		return err
	}
	if b.env, err = bd.OpenEnv(); err != nil {
		return err
	}
	// Release key: private half for the build host, public half in the keyring.
	var sink bytes.Buffer
	quiet := &Env{Prog: b.e.Prog, Stdin: b.e.Stdin, Stdout: &sink, Stderr: b.e.Stderr}
	if err := cmdBundle(ctx, quiet, []string{"keygen", "--id", "demo-release", "-o", b.path("keys/demo-release")}); err != nil {
		return err
	}
	if b.cfg, err = config.Load(bd.Config); err != nil {
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
	b.say("   keyring: keys/demo-release.pub; health check: check.sh; reboot command: reboot.sh; config: system.conf")
	return nil
}

// writeSlotImage puts img at the start of the slot file at path, keeping
// its size.
func writeSlotImage(path string, img []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(img, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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
	return b.startDaemon(ctx, st.UpgradeAvailable)
}

// startDaemon runs `otad serve` on the demo bus, waits for its name and for
// the trial-boot confirmation (if any) to settle, and tells what happened.
func (b *demoBoard) startDaemon(ctx context.Context, trial bool) error {
	if err := os.Remove(b.path("reboot-requested")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintf(b.logFile, "---- otad demo: power-on %d, starting otad serve\n", b.boots)
	cmd := exec.Command(b.exe, "serve", "-config", b.path("system.conf"), "-bus", b.busAddr, "-log-level", "debug")
	cmd.Stdout, cmd.Stderr = b.logFile, b.logFile
	cmd.Env = demoChildEnv()
	cmd.Dir = b.work
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p, err := startProc("otad serve", cmd)
	if err != nil {
		return err
	}
	b.serve = p
	deadline := time.Now().Add(demoWait)
	var st dbusapi.Status
	for {
		if st, err = b.client.Status(ctx); err == nil {
			break
		}
		select {
		case <-p.done:
			return fmt.Errorf("otad serve exited at start: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("io.otad.Update1 did not appear on the bus within %v: %w", demoWait, err)
		}
	}
	how := ""
	if trial {
		how = ", trial boot: confirming"
	}
	b.say("   [otad] otad serve (pid %d) owns io.otad.Update1; booted slot %s%s", p.cmd.Process.Pid, st.BootSlot, how)
	if st, err = b.settle(ctx); err != nil {
		return err
	}
	if !trial {
		return nil
	}
	// The daemon may answer on the bus before its health check has begun
	// (Operation still "idle" with the boot a trial): wait until the trial
	// is decided, committed or rolled back, not just until the daemon idles.
	for deadline := time.Now().Add(demoWait); ; {
		done, err := b.trialDecided(ctx, st)
		if done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("trial boot of slot %s neither committed nor rolled back after %v", st.BootSlot, demoWait)
		}
		select {
		case <-b.serve.done:
			return fmt.Errorf("otad serve exited during the trial boot: %v", b.serve.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if st, err = b.settle(ctx); err != nil {
			return err
		}
	}
}

// trialDecided reports the trial boot's outcome once there is one.
func (b *demoBoard) trialDecided(ctx context.Context, st dbusapi.Status) (bool, error) {
	slots, err := b.client.Slots(ctx)
	if err != nil {
		return false, err
	}
	for _, s := range slots {
		if s.Name != st.BootSlot {
			continue
		}
		switch state := demoProp(s, "state"); {
		case state == string(journal.SlotBad):
			b.say("   [otad] ROLLED BACK slot %s: %s", s.Name, demoProp(s, "reason"))
			if b.rebootRequested() {
				b.say("   [otad] reboot requested to fall back: reboot-command ran reboot.sh")
			}
			return true, nil
		case !st.TrialBoot:
			b.say("   [otad] slot %s confirmed and committed", s.Name)
			return true, nil
		}
	}
	return false, nil
}

func demoProp(s dbusapi.SlotStatus, name string) string {
	if v, ok := s.Props[name]; ok {
		if str, ok := v.Value().(string); ok {
			return str
		}
	}
	return ""
}

// settle waits until the daemon has nothing running: idle, armed and
// waiting for the reboot, or handing the board over to a reboot (after a
// failed trial it stays rolling-back until the power goes).
func (b *demoBoard) settle(ctx context.Context) (dbusapi.Status, error) {
	deadline := time.Now().Add(demoWait)
	for {
		st, err := b.client.Status(ctx)
		if err != nil {
			return st, err
		}
		if st.Operation == "idle" || st.Operation == "pending-reboot" || b.rebootRequested() {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("otad still %s after %v", st.Operation, demoWait)
		}
		select {
		case <-b.serve.done:
			return st, fmt.Errorf("otad serve exited while %s: %v", st.Operation, b.serve.err)
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// rebootRequested reports whether the daemon ran its reboot command.
func (b *demoBoard) rebootRequested() bool {
	_, err := os.Stat(b.path("reboot-requested"))
	return err == nil
}

// install is `otactl install` with a compact progress line.
func (b *demoBoard) install(ctx context.Context, bundlePath string) error {
	t0 := time.Now()
	line := "   [otad] installing into slot " + map[string]string{"A": "B", "B": "A"}[b.booted] + ":"
	next, lastOp := 25, ""
	report := func(u dbusapi.Update) {
		if op := u.Operation; op != "" && op != lastOp && op != "idle" && op != "pending-reboot" {
			line += " " + op
			lastOp = op
		}
		if p := u.Progress; p != nil && p.Total > 0 && int(p.Percent) >= next {
			line += fmt.Sprintf(" %d%%", p.Percent)
			next = (int(p.Percent)/25 + 1) * 25
		}
	}
	b.say("   $ otactl install -bus unix:path=bus.sock %s", filepath.Base(bundlePath))
	_, res, msg, err := b.client.Install(ctx, bundlePath, nil, report)
	if err != nil {
		return err
	}
	b.say("%s (%.1fs)", line, time.Since(t0).Seconds())
	if res != 0 {
		return fmt.Errorf("install failed: %s", msg)
	}
	b.say("   [otad] %s", msg)
	if _, err := b.settle(ctx); err != nil {
		return err
	}
	// reboot = auto: the engine runs reboot-command right after arming.
	deadline := time.Now().Add(demoWait)
	for !b.rebootRequested() {
		if time.Now().After(deadline) {
			return fmt.Errorf("no reboot request within %v after the install (reboot = auto)", demoWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.say("   [otad] reboot requested (reboot = auto): reboot-command ran reboot.sh")
	return nil
}

// reboot restarts the board: otad serve gets SIGTERM as systemd would send
// it, the bootloader model runs, otad serve starts again.
func (b *demoBoard) reboot(ctx context.Context) error {
	p := b.serve
	b.serve = nil
	if err := p.stop(); err != nil {
		return fmt.Errorf("stopping otad serve (pid %d): %w", p.cmd.Process.Pid, err)
	}
	return b.powerOn(ctx)
}

func (b *demoBoard) teardown() {
	if b.client != nil {
		b.client.Close()
	}
	if err := b.serve.stop(); err != nil {
		fmt.Fprintf(b.e.Stderr, "demo: otad serve: %v\n", err)
	}
	if b.bus != nil {
		b.bus.Stop() // SIGTERM is how dbus-daemon is meant to end
		_ = os.WriteFile(b.path("dbus.log"), []byte(b.bus.Stderr()), 0o644)
	}
	if b.env != nil {
		b.env.Close()
	}
	if b.logFile != nil {
		b.logFile.Close()
	}
}

// show prints the slot table the daemon reports over D-Bus and the env and
// floor as the files hold them.
func (b *demoBoard) show(ctx context.Context) error {
	st, err := b.client.Status(ctx)
	if err != nil {
		return err
	}
	slots, err := b.client.Slots(ctx)
	if err != nil {
		return err
	}
	for _, s := range slots {
		state := demoProp(s, "state")
		if state == "" {
			state = "empty"
		}
		extra := ""
		if s.Name == st.BootSlot {
			extra = "  <- booted"
		}
		if state == string(journal.SlotBad) {
			extra += "  (rolled back; reason kept in data/journal.json)"
		}
		ver := demoProp(s, "version")
		if ver == "" {
			ver = "-"
		}
		b.say("   slot %s  %-8s %-5s%s", s.Name, state, ver, extra)
	}
	bs, err := (&boot.Protocol{Store: b.env}).State()
	if err != nil {
		return err
	}
	fl := "?"
	if f, err := floor.New(b.cfg.DataDir).Get(); err == nil {
		fl = fmt.Sprint(f)
	}
	b.say("   env: otad_slot=%s otad_prev=%s upgrade_available=%d bootcount=%d; anti-rollback floor %s",
		bs.Slot, bs.Prev, map[bool]int{true: 1}[bs.UpgradeAvailable], bs.BootCount, fl)
	return nil
}
