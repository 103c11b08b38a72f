package sdsys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// listenNotify stands in for systemd's notify socket: a real unixgram
// socket whose datagrams the test reads.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, c *net.UnixConn, wait time.Duration) (string, error) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestNotifierMessages(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l := listenNotify(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "")
	n, err := NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		send func() error
		want string
	}{
		{func() error { return n.Ready("idle, slot A booted") }, "READY=1\nSTATUS=idle, slot A booted"},
		{func() error { return n.Status("writing\nslot B 40%") }, "STATUS=writing slot B 40%"},
		{func() error { return n.Ready("") }, "READY=1"},
		{n.Ping, "WATCHDOG=1"},
		{n.Stopping, "STOPPING=1"},
	}
	for _, s := range steps {
		if err := s.send(); err != nil {
			t.Fatal(err)
		}
		got, err := recv(t, l, 5*time.Second)
		if err != nil || got != s.want {
			t.Fatalf("got %q (%v), want %q", got, err, s.want)
		}
	}
	if n.WatchdogInterval != 0 {
		t.Fatalf("watchdog interval %v without WATCHDOG_USEC", n.WatchdogInterval)
	}
}

func TestNotifierAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@otad-sdsys-test-%d", os.Getpid())
	l := listenNotify(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	n := &Notifier{}
	if err := n.Stopping(); err != nil {
		t.Fatal(err)
	}
	if got, err := recv(t, l, 5*time.Second); err != nil || got != "STOPPING=1" {
		t.Fatalf("got %q %v", got, err)
	}
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n, err := NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready("x"); err != nil {
		t.Fatal(err)
	}
	n.RunWatchdog(context.Background(), nil) // returns at once
	// A socket path nobody listens on is an error the caller can log.
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if err := n.Ready(""); err == nil {
		t.Fatal("send to a missing socket succeeded")
	}
}

func TestNotifierWatchdogEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/nonexistent")
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := NewNotifier()
	if err != nil || n.WatchdogInterval != 30*time.Second {
		t.Fatalf("%v %v", n.WatchdogInterval, err)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1)) // meant for another process
	if n, _ := NewNotifier(); n.WatchdogInterval != 0 {
		t.Fatalf("took another process's watchdog: %v", n.WatchdogInterval)
	}
	t.Setenv("WATCHDOG_USEC", "soon")
	if _, err := NewNotifier(); err == nil {
		t.Fatal("bad WATCHDOG_USEC accepted")
	}
}

// RunWatchdog pings at half the interval while the main loop answers, and
// stops pinging while it does not, so systemd restarts a hung daemon.
func TestNotifierWatchdogLoopFollowsLiveness(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l := listenNotify(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "40000") // 40ms: a ping every 20ms
	t.Setenv("WATCHDOG_PID", "")
	n, err := NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	var hung atomic.Bool
	var refused atomic.Int32 // liveness probes answered "hung"
	alive := func(ctx context.Context) error {
		if hung.Load() {
			refused.Add(1)
			<-ctx.Done() // the main loop does not answer
			return ctx.Err()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, alive); close(done) }()

	for i := 0; i < 3; i++ {
		if got, err := recv(t, l, 5*time.Second); err != nil || got != "WATCHDOG=1" {
			t.Fatalf("ping %d: %q %v", i, got, err)
		}
	}
	hung.Store(true)
	waitFor := func(n int32) {
		for refused.Load() < n {
			time.Sleep(time.Millisecond)
		}
	}
	// Once a probe was refused, any ping decided before the hang has been
	// written (pings are sent synchronously in the same loop): drain them.
	waitFor(1)
	for {
		if _, err := recv(t, l, time.Millisecond); err != nil {
			break
		}
	}
	// Three more ticks with a hung main loop: not a single ping.
	waitFor(4)
	if got, err := recv(t, l, time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pinged while the main loop hung: %q %v", got, err)
	}
	hung.Store(false)
	if got, err := recv(t, l, 5*time.Second); err != nil || got != "WATCHDOG=1" {
		t.Fatalf("no ping after recovery: %q %v", got, err)
	}
	cancel()
	<-done
}
