// Command rssbench measures memory for bench/60-rss.sh.
//
//	rssbench install CONFIG BUNDLE   run the daemon wiring of `otad serve`
//	                                 (internal/daemon, minus the bus), report
//	                                 idle RSS after start and peak RSS (VmHWM)
//	                                 after installing BUNDLE
//	rssbench initenv CONFIG          write a fresh boot env if there is none
//	rssbench exec CMD [ARGS...]      run CMD, report its peak RSS
//
// Output is one line of key=value pairs in KiB.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/daemon"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rssbench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) >= 2 && args[0] == "exec" {
		// rusage Maxrss of a child started by Go counts this process's
		// memory (vfork shares the mm until exec), so poll the child's own
		// VmHWM instead; it only grows, the last reading is the peak.
		cmd := exec.Command(args[1], args[2:]...)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		peak := 0
		path := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			select {
			case err := <-done:
				if err != nil {
					return err
				}
				fmt.Printf("peak_kb=%d\n", peak)
				return nil
			default:
			}
			if b, err := os.ReadFile(path); err == nil && status(string(b), "Name") == filepath.Base(args[1]) {
				var v int
				if _, err := fmt.Sscan(status(string(b), "VmHWM"), &v); err == nil && v > peak {
					peak = v
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
	if len(args) == 2 && args[0] == "initenv" {
		cfg, err := config.Load(args[1])
		if err != nil {
			return err
		}
		return initEnv(cfg.EnvConfig)
	}
	if len(args) != 3 || args[0] != "install" {
		return errors.New("usage: rssbench install CONFIG BUNDLE | initenv CONFIG | exec CMD [ARGS...]")
	}
	cfg, err := config.Load(args[1])
	if err != nil {
		return err
	}
	if err := initEnv(cfg.EnvConfig); err != nil {
		return err
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	d, err := daemon.New(cfg, daemon.Options{Log: log, Rebooter: noReboot{}})
	if err != nil {
		return err
	}
	var idle, result string
	opts := func(ctx context.Context, d *daemon.Daemon) error {
		runtime.GC()
		debug.FreeOSMemory()
		time.Sleep(500 * time.Millisecond)
		idle = self("VmRSS")
		ch, stop := d.Engine.Subscribe()
		defer stop()
		if _, err := d.Engine.Install(ctx, args[2], nil); err != nil {
			return err
		}
		for ev := range ch {
			if ev.Kind == "completed" {
				if ev.Result != 0 {
					return errors.New(ev.Message)
				}
				break
			}
		}
		d.Engine.Wait()
		result = self("VmHWM")
		return nil
	}
	if err := daemon.RunWith(context.Background(), d, opts); err != nil {
		return err
	}
	fmt.Printf("idle_kb=%s peak_kb=%s\n", idle, result)
	return nil
}

// initEnv writes a fresh env when the files hold none (factory step).
func initEnv(path string) error {
	ec, err := bootenv.LoadConfig(path)
	if err != nil {
		return err
	}
	s, err := bootenv.OpenStore(ec)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Load(); err == nil {
		return nil
	}
	e := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "A", "otad_prev": "A", "upgrade_available": "0", "bootcount": "0"} {
		e.Set(k, v)
	}
	return s.Init(e)
}

// self returns a /proc/self/status field in KiB.
func self(field string) string {
	b, _ := os.ReadFile("/proc/self/status")
	return status(string(b), field)
}

// status returns a field of a /proc status file in KiB.
func status(b, field string) string {
	for _, l := range strings.Split(b, "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSuffix(strings.TrimSpace(v), " kB")
		}
	}
	return "?"
}

type noReboot struct{}

func (noReboot) Reboot(context.Context) error { return nil }
