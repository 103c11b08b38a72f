package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/sdsys"
	"github.com/otadev/otad/internal/update"
)

// stopWait bounds how long shutdown waits for the engine's work to stop
// before otad exits anyway (a read or write stuck in the kernel); systemd's
// TimeoutStopSec= is the outer bound.
const stopWait = 10 * time.Second

// notifyLoop reports READY=1 now, then STATUS= lines following the engine
// (operation and percent), and pings the service watchdog while the engine
// is not wedged (Engine.Alive). The returned stop ends the STATUS lines
// after flushing those already queued; the watchdog ends with ctx (tracked
// by wg).
func (d *Daemon) notifyLoop(ctx context.Context, n *sdsys.Notifier, wg *sync.WaitGroup) (stop func()) {
	_ = n.Ready(statusLine(d.Engine.Status()))
	ch, unsubscribe := d.Engine.Subscribe()
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.RunWatchdog(ctx, func(context.Context) error { return d.Engine.Alive() })
	}()
	var sw sync.WaitGroup
	sw.Add(1)
	go func() {
		defer sw.Done()
		var th statusThrottle
		for range ch {
			st := d.Engine.Status()
			if line := statusLine(st); th.due(st, line, time.Now()) {
				// sd_notify blocks while the manager's queue is full: few
				// lines, not one per percent.
				_ = n.Status(line)
			}
		}
	}()
	return func() { unsubscribe(); sw.Wait() }
}

// statusThrottle lets a STATUS= line through when the operation or phase
// changed, or the percent moved by 10 points or reached 100, or a second
// passed since the last line.
type statusThrottle struct {
	line, op string
	pct      int
	at       time.Time
}

func (t *statusThrottle) due(st update.Status, line string, now time.Time) bool {
	if line == t.line {
		return false
	}
	p := st.Progress
	if st.Operation == t.op && p.Total > 0 && p.Percent < t.pct+10 && p.Percent < 100 && now.Sub(t.at) < time.Second {
		return false
	}
	t.line, t.op, t.pct, t.at = line, st.Operation, p.Percent, now
	if p.Total == 0 {
		t.pct = 0
	}
	return true
}

// statusLine is what `systemctl status otad` shows, e.g.
// "installing 2.0 into B: writing 47%".
func statusLine(st update.Status) string {
	p := st.Progress
	switch st.Operation {
	case update.OpDownloading, update.OpVerifying, update.OpWriting:
		what := "installing"
		if st.Installing != "" {
			what = fmt.Sprintf("installing %s into %s", st.Installing, st.Target)
		}
		switch {
		case p.Total > 0:
			return fmt.Sprintf("%s: %s %d%%", what, st.Operation, p.Percent)
		case p.Phase != "":
			return fmt.Sprintf("%s: %s", what, p.Phase)
		}
		return fmt.Sprintf("%s: %s", what, st.Operation)
	case update.OpPendingReboot, update.OpConfirming, update.OpRollingBack:
		return fmt.Sprintf("booted slot %s: %s (%s)", st.BootSlot, st.Operation, p.Phase)
	}
	line := fmt.Sprintf("idle; booted slot %s", st.BootSlot)
	if st.Version != "" {
		line += ", version " + st.Version
	}
	if st.LastError != "" {
		line += "; last error: " + st.LastError
	}
	return line
}

// waitEngine waits up to stopWait for the engine's work to end. It reports
// false when the engine is still running: the caller must not close what
// the engine may still write (the env store), and exits anyway.
func (d *Daemon) waitEngine() bool {
	done := make(chan struct{})
	go func() { d.Engine.Wait(); close(done) }()
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		d.log.WithField("waited", stopWait).Error("the engine did not stop; exiting without closing the env store")
		return false
	}
}

// withCap lets the engine lower a download's size cap to what the verified
// manifest declares (update.Capper), without the engine importing fetch.
func withCap(open func(ctx context.Context, src string) (update.Source, error)) func(ctx context.Context, src string) (update.Source, error) {
	return func(ctx context.Context, src string) (update.Source, error) {
		s, err := open(ctx, src)
		if err != nil {
			return nil, err
		}
		return cappedSource{s}, nil
	}
}

type cappedSource struct{ update.Source }

func (c cappedSource) LowerCap(n int64) { fetch.LowerCap(c.Source, n) }
