package boot_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
)

// Debian's u-boot-qemu and qemu-system-arm (make deps). No disk, no Linux:
// only U-Boot running boot.scr from RAM, so the hush syntax and setexpr/itest
// arithmetic are the real ones. Loading a kernel fails by design; the
// script's own echo lines and the environment afterwards are compared with
// bootsim. (The full boot with Linux is the VM harness's job.)
const (
	ubootBin = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
	scrAddr  = "0x48000000"
)

type console struct {
	t    *testing.T
	mu   sync.Mutex
	buf  bytes.Buffer
	mark int
	in   interface{ Write([]byte) (int, error) }
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// expect waits for one of the markers after the last match and returns the
// text up to and including it, and which marker matched.
func (c *console) expect(markers ...string) (string, string) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		s := c.buf.String()[c.mark:]
		best, which := -1, ""
		for _, m := range markers {
			if i := strings.Index(s, m); i >= 0 && (best < 0 || i < best) {
				best, which = i, m
			}
		}
		if best >= 0 {
			c.mark += best + len(which)
			c.mu.Unlock()
			return s[:best+len(which)], which
		}
		c.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t.Fatalf("U-Boot console: none of %q within 60s; tail:\n%s", markers, tail(c.buf.String(), 2000))
	return "", ""
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (c *console) send(line string) {
	c.t.Helper()
	if _, err := c.in.Write([]byte(line + "\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *console) toPrompt() {
	c.expect("Hit any key")
	c.send("")
	c.expect("=> ")
}

func TestBootScriptInRealUBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs U-Boot under QEMU (~15 s)")
	}
	for _, p := range []string{"qemu-system-aarch64", "mkimage"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s missing (make deps): %v", p, err)
		}
	}
	if _, err := os.Stat(ubootBin); err != nil {
		t.Fatalf("u-boot-qemu missing (make deps): %v", err)
	}
	scr := filepath.Join(t.TempDir(), "boot.scr")
	if out, err := exec.Command("mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none",
		"-d", scriptPath, scr).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, out)
	}
	cmd := exec.Command("qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "256",
		"-nographic", "-nic", "none", "-bios", ubootBin,
		"-device", "loader,file="+scr+",addr="+scrAddr+",force-raw=on")
	c := &console{t: t}
	cmd.Stdout, cmd.Stderr = c, c
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.in = in
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c.toPrompt()

	state := regexp.MustCompile(`\nSTATE ([^$\r\n]*)\r?\n`)
	cases := []map[string]string{
		{boot.VarSlot: "B", boot.VarPrev: "A", boot.VarUpgrade: "0"},                                                 // normal boot
		{boot.VarSlot: "B", boot.VarPrev: "A", boot.VarUpgrade: "1", boot.VarBootCount: "3", boot.VarBootLimit: "3"}, // 4th trial: fall back
		{boot.VarSlot: "A", boot.VarPrev: "B", boot.VarUpgrade: "1", boot.VarBootCount: "9", boot.VarBootLimit: "9"}, // 9+1 = a (hex) > 9
		{boot.VarSlot: "B", boot.VarPrev: "A", boot.VarUpgrade: "1"},                                                 // first trial: counts, saves, resets
		{boot.VarSlot: "B", boot.VarPrev: "A", boot.VarUpgrade: "1", boot.VarBootCount: "1", "otad_native_bootcount": "1"},
	}
	for i, vars := range cases {
		e := bootenv.NewEnv()
		var set []string
		for k, v := range vars {
			e.Set(k, v)
			set = append(set, fmt.Sprintf("setenv %s %s", k, v))
		}
		store := bootenv.NewMemStore(e)
		simSlot, err := bootsim.Step(store)
		if err != nil {
			t.Fatal(err)
		}
		sim, _ := store.Load()
		get := func(k string) string { v, _ := sim.Get(k); return v }
		native := vars["otad_native_bootcount"] == "1"

		c.send("env default -a -f; setenv kernel_addr_r 0x40400000; " + strings.Join(set, "; "))
		c.expect("=> ")
		c.send("source " + scrAddr)
		out, how := c.expect("resetting ...", "=> ")
		if strings.Contains(out, "Saving Environment") != (store.Writes() == 1 && !native) {
			t.Errorf("case %d %v: script saveenv=%v, bootsim writes=%d", i, vars, strings.Contains(out, "Saving Environment"), store.Writes())
		}
		if !native && !strings.Contains(out, "otad: booting slot "+simSlot) {
			t.Errorf("case %d %v: bootsim boots %s; U-Boot said:\n%s", i, vars, simSlot, out)
		}
		if how == "resetting ..." {
			// Trial boot whose kernel is missing: counted, then reset.
			want := fmt.Sprintf("otad: trial boot %s of %s for slot %s", get(boot.VarBootCount), get(boot.VarBootLimit), get(boot.VarSlot))
			if native {
				// U-Boot's bootcount driver counts, not the script.
				if strings.Contains(out, "otad: trial boot") {
					t.Errorf("case %d: script counted although otad_native_bootcount=1:\n%s", i, out)
				}
			} else if !strings.Contains(out, want) {
				t.Errorf("case %d %v: want %q in:\n%s", i, vars, want, out)
			}
			c.toPrompt()
			continue
		}
		c.send("echo STATE ${otad_slot},${otad_failed},${upgrade_available},${bootcount},${bootargs}")
		res, _ := c.expect("=> ")
		m := state.FindStringSubmatch(res)
		if m == nil {
			t.Fatalf("case %d: no STATE line in %q", i, res)
		}
		if native {
			continue // U-Boot's own bootcount driver is not built into Debian's U-Boot
		}
		want := fmt.Sprintf("%s,%s,%s,%s, root=/dev/vda%s rootwait otad.slot=%s", get(boot.VarSlot), get(boot.VarFailed),
			get(boot.VarUpgrade), get(boot.VarBootCount), map[string]string{"A": "2", "B": "3"}[simSlot], simSlot)
		if m[1] != want {
			t.Errorf("case %d %v:\nU-Boot  %q\nbootsim %q", i, vars, m[1], want)
		}
	}
}
