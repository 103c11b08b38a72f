package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/otadev/otad/internal/dbusapi"
)

// The client commands talk to a running "otad serve" over D-Bus.

func busFlag(fs *flag.FlagSet) *string {
	return fs.String("bus", "", "D-Bus address (default: the system bus, or $DBUS_SYSTEM_BUS_ADDRESS)")
}

func dial(ctx context.Context, addr string) (*dbusapi.Client, error) {
	return dbusapi.Dial(ctx, addr)
}

// failedInstall carries a non-zero Completed result: a refused bundle
// (result 3) exits 5 like a refusal on the bus, any other failure 1.
type failedInstall struct {
	msg    string
	result int32
}

func (f *failedInstall) Error() string { return "install failed: " + f.msg }

func (f *failedInstall) ExitCode() int {
	if f.result == completedRefused {
		return dbusapi.ExitBadBundle
	}
	return dbusapi.ExitFailure
}

// completedRefused is the Completed result for a bundle refused before
// anything was written (signature, compatible, downgrade, expiry).
const completedRefused = 3

func cmdInstall(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "install", "FILE|URL", "Install a bundle through the running daemon and wait for the result.\nExit codes: 0 installed, 1 failed, 2 usage, 3 busy, 4 not authorized,\n5 bad bundle (signature, compatible, downgrade), 6 daemon not reachable.")
	bus := busFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON lines (progress, result)")
	noReboot := fs.Bool("no-reboot", false, "do not reboot after installing, whatever the configured policy")
	reboot := fs.Bool("reboot", false, "reboot after installing, whatever the configured policy")
	skip := fs.Bool("skip-unchanged", false, "write only blocks that differ from the slot's content")
	fallback := fs.String("fallback", "", "full bundle (`FILE|URL`) to install instead if a delta bundle's source is not in the active slot")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("install: exactly one FILE or URL")
	}
	src := fs.Arg(0)
	if src == "-" || *fallback == "-" {
		return usagef("install: the daemon cannot read this terminal's stdin; give a file path or URL")
	}
	// A local file is opened here, with the caller's rights, and passed
	// as a descriptor: the daemon may not see the caller's /tmp or /home
	// (PrivateTmp, ProtectHome) and must not open paths for a caller.
	bundleSrc, closeBundle, err := localOrURL(src)
	if err != nil {
		return err
	}
	defer closeBundle()
	opts := map[string]any{}
	if *fallback != "" {
		fb, closeFB, err := localOrURL(*fallback)
		if err != nil {
			return err
		}
		defer closeFB()
		if f, ok := fb.(*os.File); ok {
			opts["fallback-fd"] = f
		} else {
			opts["fallback"] = fb
		}
	}
	if *noReboot && *reboot {
		return usagef("install: -reboot and -no-reboot exclude each other")
	}
	if *noReboot {
		opts["reboot"] = false
	}
	if *reboot {
		opts["reboot"] = true
	}
	if *skip {
		opts["skip-unchanged"] = true
	}
	c, err := dial(ctx, *bus)
	if err != nil {
		return err
	}
	defer c.Close()

	p := newProgressPrinter(e.Stdout, *asJSON)
	tx, res, msg, err := c.Install(ctx, bundleSrc, opts, p.update)
	p.finish()
	if err != nil {
		return err
	}
	if *asJSON {
		_ = json.NewEncoder(e.Stdout).Encode(map[string]any{"event": "completed", "transaction": tx, "result": res, "message": msg})
	} else {
		fmt.Fprintf(e.Stdout, "%s: %s\n", tx, msg)
	}
	if res != 0 {
		return &failedInstall{msg: msg, result: res}
	}
	return nil
}

// localOrURL returns an http(s) URL as it is, or opens a local path (or
// file:// URL) for reading without blocking and checks it is a regular file
// or block device; the caller closes it with the returned function.
func localOrURL(src string) (any, func(), error) {
	lower := strings.ToLower(src)
	if strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://") {
		return src, func() {}, nil
	}
	path := src
	if strings.HasPrefix(lower, "file://") {
		u, err := url.Parse(src)
		if err != nil || (u.Host != "" && u.Host != "localhost") {
			return nil, nil, usagef("install: bad file URL %q (want file:///path)", src)
		}
		path = u.Path
	} else if strings.Contains(src, "://") {
		return nil, nil, usagef("install: unsupported URL %q (want http, https or a file)", src)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		f.Close()
		return nil, nil, fmt.Errorf("install: %s is not a regular file", path)
	}
	return f, func() { f.Close() }, nil
}

// progressPrinter draws a bar on a terminal, plain lines when piped, JSON
// lines with -json.
type progressPrinter struct {
	w       io.Writer
	json    bool
	tty     bool
	start   time.Time
	lastPct int32
	drawn   bool
}

func newProgressPrinter(w io.Writer, asJSON bool) *progressPrinter {
	tty := false
	if f, ok := w.(*os.File); ok {
		// A terminal answers TCGETS (what x/term's IsTerminal asks).
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		tty = err == nil
	}
	return &progressPrinter{w: w, json: asJSON, tty: tty && !asJSON, start: time.Now(), lastPct: -1}
}

func (p *progressPrinter) update(u dbusapi.Update) {
	switch {
	case p.json:
		ev := map[string]any{"event": "operation", "operation": u.Operation}
		if u.Progress != nil {
			ev = map[string]any{"event": "progress", "percent": u.Progress.Percent, "done": u.Progress.Done, "total": u.Progress.Total, "phase": u.Progress.Phase}
		}
		_ = json.NewEncoder(p.w).Encode(ev)
	case u.Operation != "":
		if p.drawn {
			fmt.Fprintln(p.w)
			p.drawn = false
		}
		fmt.Fprintf(p.w, "operation: %s\n", u.Operation)
	case u.Progress != nil:
		pr := *u.Progress
		elapsed := time.Since(p.start).Seconds()
		rate := 0.0
		if elapsed > 0 {
			rate = float64(pr.Done) / elapsed
		}
		eta := "?"
		if rate > 0 && pr.Total > pr.Done {
			eta = (time.Duration(float64(pr.Total-pr.Done)/rate) * time.Second).Round(time.Second).String()
		}
		if p.tty {
			const width = 30
			n := int(pr.Percent) * width / 100
			fmt.Fprintf(p.w, "\r[%s%s] %3d%% %s/%s %s/s ETA %s  ", strings.Repeat("#", n), strings.Repeat(".", width-n),
				pr.Percent, human(pr.Done), human(pr.Total), human(int64(rate)), eta)
			p.drawn = true
		} else if pr.Percent != p.lastPct && (pr.Percent%10 == 0 || pr.Percent == 100) {
			fmt.Fprintf(p.w, "progress: %d%% %s/%s %s\n", pr.Percent, human(pr.Done), human(pr.Total), pr.Phase)
		}
		p.lastPct = pr.Percent
	}
}

func (p *progressPrinter) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func cmdStatus(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "status", "", "Show the boot slot, the current operation and every slot's state.")
	bus := busFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	c, err := dial(ctx, *bus)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	slots, err := c.Slots(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		js := map[string]any{"operation": st.Operation, "progress": st.Progress, "last_error": st.LastError,
			"boot_slot": st.BootSlot, "compatible": st.Compatible, "version": st.Version, "trial_boot": st.TrialBoot}
		var sl []map[string]any
		for _, s := range slots {
			m := map[string]any{"name": s.Name}
			for k, v := range s.Props {
				m[k] = v.Value()
			}
			sl = append(sl, m)
		}
		js["slots"] = sl
		if fl, err := c.Fleet(ctx); err == nil && fleetJSON(fl) != nil { // fleet.go
			js["fleet"] = fleetJSON(fl)
		}
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(js)
	}
	fmt.Fprintf(e.Stdout, "boot slot:  %s%s\n", st.BootSlot, map[bool]string{true: " (trial boot)", false: ""}[st.TrialBoot])
	fmt.Fprintf(e.Stdout, "compatible: %s\nversion:    %s\noperation:  %s\n", st.Compatible, st.Version, st.Operation)
	if st.Operation != "idle" && st.Progress.Total > 0 {
		fmt.Fprintf(e.Stdout, "progress:   %d%% %s/%s %s\n", st.Progress.Percent, human(st.Progress.Done), human(st.Progress.Total), st.Progress.Phase)
	}
	if st.LastError != "" {
		fmt.Fprintf(e.Stdout, "last error: %s\n", st.LastError)
	}
	if fl, err := c.Fleet(ctx); err == nil { // fleet.go
		printFleet(e.Stdout, fl)
	}
	for _, s := range slots {
		fmt.Fprintf(e.Stdout, "slot %s:\n", s.Name)
		keys := make([]string, 0, len(s.Props))
		for k := range s.Props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(e.Stdout, "  %-10s %v\n", k+":", variantString(s.Props[k]))
		}
	}
	return nil
}

func variantString(v dbus.Variant) string { return fmt.Sprint(v.Value()) }

// slotCmd builds mark-good / mark-bad / mark-active.
func slotCmd(name, method, desc string) func(ctx context.Context, e *Env, args []string) error {
	return func(ctx context.Context, e *Env, args []string) error {
		fs := newFlags(e, name, "SLOT", desc)
		bus := busFlag(fs)
		if err := parseFlags(e, fs, args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return usagef("%s: exactly one SLOT (A or B)", name)
		}
		c, err := dial(ctx, *bus)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Call(ctx, method, fs.Arg(0))
	}
}

// simpleCmd builds cancel / reboot.
func simpleCmd(name, method, desc string) func(ctx context.Context, e *Env, args []string) error {
	return func(ctx context.Context, e *Env, args []string) error {
		fs := newFlags(e, name, "", desc)
		bus := busFlag(fs)
		if err := parseFlags(e, fs, args); err != nil {
			return err
		}
		if fs.NArg() != 0 {
			return usagef("%s takes no arguments", name)
		}
		c, err := dial(ctx, *bus)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Call(ctx, method)
	}
}

var (
	cmdMarkGood   = slotCmd("mark-good", "MarkGood", "Mark SLOT good: in a trial boot of SLOT this commits it.")
	cmdMarkBad    = slotCmd("mark-bad", "MarkBad", "Mark SLOT bad: U-Boot will not boot it; in its trial boot this falls back.")
	cmdMarkActive = slotCmd("mark-active", "MarkActive", "Make SLOT the one U-Boot boots next (as a trial with the bootcount limit).")
	cmdCancel     = simpleCmd("cancel", "Cancel", "Cancel the running install; the target slot is left marked bad.")
	cmdReboot     = simpleCmd("reboot", "Reboot", "Reboot into the pending slot (for reboot=manual).")
)
