// Command vm is the end-to-end harness behind `make vmtest`: it boots
// virtual arm64 gateways (QEMU 10, Debian's U-Boot, Debian's kernel, a
// busybox userland running the static arm64 otad, or in the systemd tier a
// Debian systemd userland running otad.service with the i6300esb watchdog)
// from disks it assembles, and checks update and rollback paths against the
// real boot script and the real U-Boot. test/vm/run.sh builds the inputs and
// calls it; the systemd rootfs is built (setup-systemd.sh) only when a
// systemd scenario runs.
//
// The guest reports over a 9p share (events, env dumps, otad's status), not
// over the console; the console is kept for counting U-Boot starts and for
// failure reports. Every QEMU runs with -nic none and is killed by PID on
// every exit path (and by Pdeathsig if this process dies).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// live is the set of QEMU PIDs this process started.
var live = &pidSet{m: map[int]bool{}}

type pidSet struct {
	mu sync.Mutex
	m  map[int]bool
}

func (p *pidSet) add(pid int)    { p.mu.Lock(); p.m[pid] = true; p.mu.Unlock() }
func (p *pidSet) remove(pid int) { p.mu.Lock(); delete(p.m, pid); p.mu.Unlock() }
func (p *pidSet) killAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid := range p.m {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// errSkip marks a scenario that cannot run on this machine (an optional
// input was not built); it is reported as SKIP, never as PASS.
type errSkip string

func (e errSkip) Error() string { return "skipped: " + string(e) }

// result is one row of the final table.
type result struct {
	name    string
	ok      bool
	skipped string
	boots   int
	cuts    int
	detail  string
	took    time.Duration
}

type scenario struct {
	name  string
	quick bool
	// named: runs only when named in -mode, never in "all" (the Raspberry
	// Pi tier, rpi.go, until it passes on CI)
	named bool
	run   func(ctx context.Context, a *artifacts, r *result) error
}

func main() {
	cache := flag.String("cache", "", "setup.sh cache directory")
	repo := flag.String("repo", ".", "repository root")
	work := flag.String("work", "", "work directory (default: <cache>/../work)")
	otadArm := flag.String("otad-arm64", "", "static linux/arm64 otad for the guest")
	otadHost := flag.String("otad", "bin/otad", "host otad (bundles)")
	mode := flag.String("mode", "all", "quick (one scenario) | all | comma-separated scenario names")
	keep := flag.Bool("keep", false, "keep machine directories after passing scenarios")
	sysRoot := flag.String("systemd-rootfs", "", "Debian systemd rootfs directory (systemd tier); default: run -systemd-setup when a systemd scenario runs")
	sysSetup := flag.String("systemd-setup", "test/vm/setup-systemd.sh", "script that builds (or finds cached) the systemd rootfs and prints its directory")
	flag.Parse()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		live.killAll()
		fmt.Fprintf(os.Stderr, "vmtest: %v, QEMU killed\n", s)
		os.Exit(130)
	}()
	code := mainErr(*cache, *repo, *work, *otadArm, *otadHost, *sysRoot, *sysSetup, *mode, *keep)
	live.killAll()
	os.Exit(code)
}

func mainErr(cache, repo, work, otadArm, otadHost, sysRoot, sysSetup, mode string, keep bool) int {
	repo, _ = filepath.Abs(repo)
	if work == "" {
		work = filepath.Join(filepath.Dir(cache), "work")
	}
	if !filepath.IsAbs(otadHost) {
		otadHost = filepath.Join(repo, otadHost)
	}
	a := &artifacts{cache: cache, repo: repo, work: work, qemu: filepath.Join(cache, "qemu-system-aarch64"),
		flash0: filepath.Join(cache, "flash0.img"), otadArm: otadArm, otadHst: otadHost, sysRoot: sysRoot, sysSetup: sysSetup, slots: map[string]string{}}
	if _, err := os.Stat(filepath.Join(cache, "flash0-redundant.img")); err == nil {
		a.flash0Red = filepath.Join(cache, "flash0-redundant.img")
	}
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 1
	}
	t0 := time.Now()
	if err := a.prepare(); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest: preparing images:", err)
		return 1
	}
	fmt.Printf("vmtest: images ready in %.1fs (cache %s)\n", time.Since(t0).Seconds(), cache)

	var sel []scenario
	for _, s := range scenarios {
		switch {
		case mode == "all" && !s.named, mode == "quick" && s.quick:
			sel = append(sel, s)
		case strings.Contains(","+mode+",", ","+s.name+","):
			sel = append(sel, s)
		}
	}
	ctx := context.Background()
	var results []result
	for _, s := range sel {
		r := result{name: s.name}
		st := time.Now()
		fmt.Printf("vmtest: --- %s\n", s.name)
		err := s.run(ctx, a, &r)
		live.killAll()
		var sk errSkip
		if errors.As(err, &sk) {
			r.skipped, err = string(sk), nil
		}
		r.took = time.Since(st)
		switch {
		case r.skipped != "":
			fmt.Printf("vmtest: %s skipped: %s\n", s.name, r.skipped)
		case err != nil:
			r.ok = false
			r.detail = err.Error()
			fmt.Printf("vmtest: %s FAILED: %v\n", s.name, err)
		default:
			r.ok = true
		}
		results = append(results, r)
	}
	// Machines of passing scenarios go at the end (later scenarios may
	// continue on an earlier one's machine); failing ones stay for a look.
	for _, r := range results {
		if r.ok && !keep {
			os.RemoveAll(filepath.Join(work, "m-"+r.name))
		}
	}
	return printTable(results, time.Since(t0))
}

func printTable(rs []result, total time.Duration) int {
	fmt.Println()
	fmt.Printf("%-28s %-6s %6s %11s %8s  %s\n", "scenario", "result", "boots", "power-cuts", "time", "notes")
	fmt.Println(strings.Repeat("-", 90))
	failed := 0
	for _, r := range rs {
		res := "PASS"
		note := r.detail
		switch {
		case r.skipped != "":
			res, note = "SKIP", r.skipped
		case !r.ok:
			res = "FAIL"
			failed++
		}
		if len(note) > 200 {
			note = note[:200] + "..."
		}
		fmt.Printf("%-28s %-6s %6d %11d %7.0fs  %s\n", r.name, res, r.boots, r.cuts, r.took.Seconds(), strings.ReplaceAll(note, "\n", " | "))
	}
	fmt.Println(strings.Repeat("-", 90))
	fmt.Printf("total %.0fs, %d scenario(s), %d failed\n", total.Seconds(), len(rs), failed)
	if failed > 0 || len(rs) == 0 {
		return 1
	}
	return 0
}
