package update

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// An open that blocks in the kernel (a FIFO nobody writes, a hung NFS
// server) must not wedge the engine: Cancel ends it within a second, the
// install is reported canceled, and the next Install is not Busy.
// (Issue 19, "a blocked open wedges the engine"; written against the code
// before the fix, where Cancel gave up after 5 s with "still stopping".)
func TestCancelEndsABlockedOpen(t *testing.T) {
	d := newDevice(t)
	fifo := filepath.Join(t.TempDir(), "bundle.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 4)
	e := d.engine(func(c *Config) {
		c.OpenSource = func(ctx context.Context, src string) (Source, error) {
			entered <- struct{}{}
			// A plain blocking open: the kernel holds it until a writer
			// appears, whatever ctx says.
			f, err := os.OpenFile(src, os.O_RDONLY, 0)
			if err != nil {
				return nil, err
			}
			return fileSource{f}, nil
		}
	})
	d.start(e)
	t.Cleanup(func() {
		// Release the open still blocked in the kernel (a writer appears),
		// then let the engine's goroutines end.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		e.Wait()
	})

	if _, err := e.Install(context.Background(), fifo, nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	time.Sleep(50 * time.Millisecond) // let the goroutine reach open(2)
	start := time.Now()
	err := e.Cancel()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Cancel of a blocked open: %v (after %v)", err, took)
	}
	if took > time.Second {
		t.Fatalf("Cancel took %v, want at most 1 s", took)
	}
	if st := e.Status(); st.Operation != OpIdle || st.LastError == "" {
		t.Fatalf("after Cancel: %+v", st)
	}
	// The engine is free again: the next Install is accepted (it blocks in
	// the same open, and is canceled the same way).
	if _, err := e.Install(context.Background(), fifo, nil); errors.Is(err, ErrBusy) || err != nil {
		t.Fatalf("Install after the cancel: %v", err)
	}
	<-entered
	if err := e.Cancel(); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
}

// fileSource is an *os.File as a Source.
type fileSource struct{ *os.File }

func (f fileSource) Size() int64 {
	st, err := f.Stat()
	if err != nil {
		return -1
	}
	return st.Size()
}

// A job that does not stop after Cancel makes the engine report itself
// wedged once the cancel deadline passed, so the daemon stops pinging the
// service watchdog; it is alive again when the job ends.
func TestAliveReportsAWedgedJob(t *testing.T) {
	d := newDevice(t)
	e := d.engine()
	d.start(e)
	if err := e.Alive(); err != nil {
		t.Fatalf("idle engine: %v", err)
	}
	if _, err := e.begin("wedged"); err != nil {
		t.Fatal(err)
	}
	if err := e.RequestCancel(); err != nil {
		t.Fatal(err)
	}
	if err := e.Alive(); err != nil {
		t.Fatalf("just canceled, inside the deadline: %v", err)
	}
	e.mu.Lock()
	e.stopAt = time.Now().Add(-cancelWait - time.Second) // the deadline passed
	e.mu.Unlock()
	if err := e.Alive(); err == nil {
		t.Fatal("a job stuck past its cancel deadline counts as alive")
	}
	e.end()
	if err := e.Alive(); err != nil {
		t.Fatalf("after the job ended: %v", err)
	}
}
