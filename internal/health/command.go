package health

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTailBytes is how much of a failing command's output is kept.
const DefaultTailBytes = 4096

// CommandChecker runs one check command from the configuration. Exit status
// 0 is healthy. The command runs in its own process group, and the whole
// group is killed on timeout, so a check that forks helpers leaves nothing
// behind.
type CommandChecker struct {
	Argv []string
	// Timeout bounds this command; 0 leaves only the confirmation window.
	Timeout time.Duration
	// TailBytes of combined stdout+stderr are kept for the report;
	// 0 means DefaultTailBytes.
	TailBytes int
	// Env, if non-nil, replaces the environment (exec.Cmd.Env semantics).
	Env []string
}

// Name is "command " followed by the argv, shown in reports.
func (c *CommandChecker) Name() string { return "command " + strings.Join(c.Argv, " ") }

// Check runs the command and returns nil or a *Failure with the exit status
// (or timeout) and the tail of the output.
func (c *CommandChecker) Check(ctx context.Context) error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return &Failure{Check: "command", Reason: "empty command"}
	}
	parent := ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	n := c.TailBytes
	if n <= 0 {
		n = DefaultTailBytes
	}
	out := &tailBuffer{max: n}

	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = c.Env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the whole group the command leads.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A grandchild that escaped the group (setsid) may still hold the
	// output pipe; do not wait for it forever.
	cmd.WaitDelay = 2 * time.Second

	err := cmd.Run()
	if err == nil {
		return nil
	}
	f := &Failure{Check: c.Name(), Output: out.String()}
	var exitErr *exec.ExitError
	switch {
	case parent.Err() != nil:
		// The caller tells a window expiry or shutdown from a verdict by
		// its own context; keep that error reachable with errors.Is.
		f.Reason = fmt.Sprintf("stopped (%v); process group killed", context.Cause(parent))
		return &wrappedFailure{Failure: f, cause: parent.Err()}
	case ctx.Err() != nil:
		f.Reason = fmt.Sprintf("timed out after %v; process group killed", c.Timeout)
	case errors.As(err, &exitErr):
		f.Reason = exitErr.Error() // "exit status 3" or "signal: killed"
	default:
		f.Reason = err.Error() // not found, permission denied
	}
	return f
}

// wrappedFailure is a *Failure that also unwraps to a context error.
type wrappedFailure struct {
	*Failure
	cause error
}

func (w *wrappedFailure) Unwrap() []error { return []error{w.Failure, w.cause} }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		if len(p) > t.max || len(t.buf) > 0 {
			t.dropped = true
		}
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return "…" + string(t.buf)
	}
	return string(t.buf)
}
