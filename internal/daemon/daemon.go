// Package daemon wires otad together: configuration → boot env store,
// slots, keyring, journal, floor, health confirmer, rebooter → the update
// engine, and the engine → the bus (through the Serve seam) and systemd
// (sd_notify). It holds no update logic of its own.
//
// Invariants: READY=1 is sent only after the engine has loaded and settled
// its persistent state; on shutdown the engine's work is stopped through
// its context and waited for before the env store is closed, so no write
// is cut off by otad itself.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/hawkbit"
	"github.com/otadev/otad/internal/health"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/logging"
	"github.com/otadev/otad/internal/sdsys"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/update"
)

// Options replace parts of the wiring; the zero value is production.
type Options struct {
	Log *logrus.Logger
	// Env replaces the store opened from the config's env-config.
	Env bootenv.Store
	// Cmdline replaces reading the config's cmdline file.
	Cmdline func() (string, error)
	// Confirmer replaces the health confirmer built from [health].
	Confirmer update.Confirmer
	// Rebooter replaces the one built from [system] reboot-command.
	Rebooter update.Rebooter
	// Serve exposes the engine (normally on D-Bus) until ctx ends; nil
	// serves nothing (in-process use: demo, tests).
	Serve func(ctx context.Context, d *Daemon) error
	// Notifier reports to systemd; nil disables sd_notify.
	Notifier *sdsys.Notifier
}

// Daemon is one wired otad.
type Daemon struct {
	Config *config.Config
	Engine *update.Engine
	log    *logrus.Entry
	opts   Options
	closer func() error
	// env is the boot env store the engine writes; read-only outside the
	// engine (the RAUC face reads the next boot slot from it).
	env bootenv.Store

	// Credentials are the downloader's origin-bound headers and client
	// certificates ([fetch] origins); a fleet client adds its own at
	// runtime with Credentials.Add (see package fetch).
	Credentials *fetch.Credentials
	// Hawkbit is the hawkBit DDI client; nil when [hawkbit] is off (hawkbit.go).
	Hawkbit *hawkbit.Client
}

// New builds the daemon from cfg. Nothing is written yet.
func New(cfg *config.Config, o Options) (*Daemon, error) {
	if o.Log == nil {
		o.Log = logrus.New()
	}
	log := o.Log.WithField("component", "daemon")
	d := &Daemon{Config: cfg, log: log, opts: o, closer: func() error { return nil }}

	env := o.Env
	if env == nil {
		ds, err := openEnv(cfg)
		if err != nil {
			return nil, err
		}
		env, d.closer = ds, ds.Close
	}
	d.env = env
	slots, err := Slots(cfg)
	if err != nil {
		d.closer()
		return nil, err
	}
	kr, err := LoadKeyring(cfg.Keyring)
	if err != nil {
		d.closer()
		return nil, err
	}
	j, err := journal.New(cfg.DataDir)
	if err != nil {
		d.closer()
		return nil, err
	}
	cmdline := o.Cmdline
	if cmdline == nil {
		cmdline = readFile(cfg.Cmdline)
	}
	confirmer := o.Confirmer
	if confirmer == nil {
		confirmer, err = NewConfirmer(cfg.Health)
		if err != nil {
			d.closer()
			return nil, err
		}
	}
	rebooter := o.Rebooter
	if rebooter == nil {
		rebooter = NewRebooter(cfg.RebootCommand)
	}
	fo, err := FetchOptions(cfg.Fetch)
	if err != nil {
		d.closer()
		return nil, err
	}
	d.Credentials = fo.Credentials
	e, err := update.New(update.Config{
		Log:        logging.KV{Entry: logging.Component(o.Log, "update")},
		Compatible: cfg.Compatible,
		Slots:      slots,
		Env:        env,
		BootLimit:  cfg.BootLimit,
		OpenSource: withCap(openSource(fo)),
		Keyring:    kr,
		Confirmer:  confirmer,
		Rebooter:   rebooter,
		AutoReboot: cfg.Reboot == config.RebootAuto,
		Cmdline:    cmdline,
		Journal:    j,
		Floor:      checkedFloor(log, &floor.Store{FS: j.FS, Dir: cfg.DataDir}, j, cfg),
	})
	if err != nil {
		d.closer()
		return nil, err
	}
	d.Engine = e
	return d, nil
}

// openEnv opens the boot env store the config names, with its lock.
func openEnv(cfg *config.Config) (*bootenv.DeviceStore, error) {
	ec, err := bootenv.LoadConfig(cfg.EnvConfig)
	if err != nil {
		return nil, fmt.Errorf("env-config: %w", err)
	}
	if cfg.EnvLock != "" {
		ec.LockPath = cfg.EnvLock
	}
	// A single-copy env on FAT refuses every arm unless accepted (ArmRisk).
	ec.AcceptSingleCopy = cfg.SingleEnv == config.SingleEnvAccept
	ds, err := bootenv.OpenStore(ec)
	if err != nil {
		return nil, fmt.Errorf("env-config %s: %w", cfg.EnvConfig, err)
	}
	return ds, nil
}

// readFile returns a function reading the file at path (the kernel
// command line) each time it is called.
func readFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		return string(b), err
	}
}

// Slots turns the config's rootfs slot sections into slot.Slots by name,
// creating file-backed slots of the configured size.
func Slots(cfg *config.Config) (map[string]slot.Slot, error) {
	out := map[string]slot.Slot{}
	for _, s := range cfg.Slots {
		if s.Class != update.RootfsClass {
			return nil, fmt.Errorf("slot class %q: only %q slots are supported", s.Class, update.RootfsClass)
		}
		if s.Type == slot.TypeFile && s.Size > 0 {
			t, err := slot.NewFileTarget(s.Device, s.Size)
			if err != nil {
				return nil, err
			}
			t.Close()
		}
		out[s.Name] = slot.Slot{Name: s.Name, Class: s.Class, Device: s.Device, Type: s.Type, Bootname: s.Bootname}
	}
	return out, nil
}

// LoadKeyring loads the trusted keys; the config's threshold can only make
// the directory's policy stricter.
func LoadKeyring(k config.Keyring) (*bundle.Keyring, error) {
	kr, err := bundle.LoadKeyring(k.Directory)
	if err != nil {
		return nil, err
	}
	if k.Threshold > kr.Policy.Threshold {
		kr.Policy.Threshold = k.Threshold
	}
	if kr.Decryption, err = LoadDecryptionKey(k.DecryptionKey); err != nil { // decryption.go
		return nil, err
	}
	return kr, nil
}

// NewConfirmer builds the trial-boot health confirmation from [health].
func NewConfirmer(h config.Health) (update.Confirmer, error) {
	c := &health.Confirmer{Window: h.Timeout,
		Checkers: health.Standard(&sdsys.Units{}, h.Target, h.NoFailedUnits, h.Checks, h.CheckTimeout)}
	if h.Watchdog == config.WatchdogOtad {
		return &watchdogConfirmer{c: c, device: h.WatchdogDevice}, nil
	}
	return c, nil
}

// watchdogConfirmer opens the hardware watchdog only for the trial: opening
// it starts the countdown, so a normal boot must never do it.
type watchdogConfirmer struct {
	c      *health.Confirmer
	device string
}

func (w *watchdogConfirmer) Confirm(ctx context.Context) error {
	wd, err := health.OpenWatchdog(w.device, 0)
	if err != nil {
		// Without the watchdog a hung check is still bounded by the window.
		return fmt.Errorf("watchdog %s: %w", w.device, err)
	}
	c := *w.c
	c.Watchdog = wd
	return c.Confirm(ctx)
}

// RunWith is Run with serve in place of Options.Serve (benchmarks, tools).
func RunWith(ctx context.Context, d *Daemon, serve func(ctx context.Context, d *Daemon) error) error {
	d.opts.Serve = serve
	return d.Run(ctx)
}

// Run starts the engine, reports READY, serves until ctx ends, then stops
// the engine's work and closes the env store. Serve returning ends Run.
func (d *Daemon) Run(ctx context.Context) error {
	tuneMemory()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hb := d.newHawkbit() // hawkbit.go: binds its token before a resumed download needs it
	if err := d.Engine.Start(ctx); err != nil {
		d.log.WithError(err).Error("engine start failed")
		d.Engine.Wait()
		d.closer()
		return err
	}
	n := d.opts.Notifier
	st := d.Engine.Status()
	var wg sync.WaitGroup
	defer wg.Wait()
	stopStatus := func() {}
	if n != nil {
		stopStatus = d.notifyLoop(ctx, n, &wg) // systemd.go
	}
	d.log.WithFields(logrus.Fields{"booted": st.BootSlot, "operation": st.Operation, "trial": st.TrialBoot}).Info("otad ready")
	// [hawkbit]: the DDI client (hawkbit.go)
	d.runHawkbit(ctx, hb, &wg)
	d.startChannel(ctx, &wg) // [channel]: the static update channel client (channel.go)
	var serveErr error
	if d.opts.Serve != nil {
		serveErr = d.opts.Serve(ctx, d)
		if serveErr != nil && !errors.Is(serveErr, context.Canceled) {
			d.log.WithError(serveErr).Error("serving stopped")
		}
	} else {
		<-ctx.Done()
	}
	stopStatus()
	if n != nil {
		_ = n.Stopping()
	}
	cancel()
	if !d.waitEngine() { // bounded: a wedged engine must not hang shutdown
		return errors.New("daemon: the engine did not stop in time")
	}
	if err := d.closer(); err != nil {
		d.log.WithError(err).Error("closing the env store")
	}
	if serveErr != nil && !errors.Is(serveErr, context.Canceled) {
		return serveErr
	}
	return nil
}

// Close releases the env store when Run is not used.
func (d *Daemon) Close() error {
	d.Engine.Wait()
	return d.closer()
}

// tuneMemory keeps the daemon small on a gateway: the install path streams
// through a few fixed buffers, so a soft limit makes the GC collect before
// the heap grows instead of doubling it. GOMEMLIMIT from the environment
// (e.g. set in otad.service) wins.
func tuneMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(24 << 20)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
}
