package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime/debug"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/hawkbit"
	"github.com/otadev/otad/internal/journal"
)

// MachineIDPath is where the default hawkBit controller id comes from.
const MachineIDPath = "/etc/machine-id"

// HawkbitStateFile is the hawkBit client's action record in the data dir.
const HawkbitStateFile = "hawkbit-action.json"

// newHawkbit builds the hawkBit DDI client from [hawkbit]; nil when the
// section is off or the client cannot start (logged: the daemon's own API
// keeps working). It runs before the engine starts, because binding the
// token to the server's origin in d.Credentials must precede a download
// the engine resumes at start.
func (d *Daemon) newHawkbit() *hawkbit.Client {
	h := d.Config.Hawkbit
	if !h.Enabled() {
		return nil
	}
	log := d.log.WithField("component", "hawkbit")
	c, err := NewHawkbitClient(d, log)
	if err != nil {
		log.WithError(err).Error("hawkBit client not started")
		return nil
	}
	d.Hawkbit = c
	return c
}

// runHawkbit runs the client until ctx ends; wg waits for it.
func (d *Daemon) runHawkbit(ctx context.Context, c *hawkbit.Client, wg *sync.WaitGroup) {
	if c == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.Run(ctx) // ends with ctx; everything else is logged inside
	}()
}

// NewHawkbitClient wires the client: token file (refused if others may
// read it), controller id (default from the machine id), TLS from [fetch]
// (CA; the client certificate when the server lies in a [fetch] origin),
// the action record in the data dir, the engine through fleet.Updater.
func NewHawkbitClient(d *Daemon, log *logrus.Entry) (*hawkbit.Client, error) {
	h := d.Config.Hawkbit
	var token string
	if h.TokenFile != "" {
		var err error
		if token, err = hawkbit.ReadToken(h.TokenFile); err != nil {
			return nil, err
		}
	}
	id := h.ControllerID
	if id == "" {
		var err error
		if id, err = hawkbit.ControllerIDFromMachineID(MachineIDPath); err != nil {
			return nil, err
		}
	}
	tlsCfg := hawkbit.TLS{CAFile: d.Config.Fetch.CA}
	if serverInOrigins(h.Server, d.Config.Fetch) {
		tlsCfg.CertFile, tlsCfg.KeyFile = d.Config.Fetch.Cert, d.Config.Fetch.Key
	}
	tr, err := hawkbit.NewTransport(tlsCfg)
	if err != nil {
		return nil, err
	}
	j, err := journal.New(d.Config.DataDir)
	if err != nil {
		return nil, err
	}
	return hawkbit.New(hawkbit.Config{
		Server: h.Server, Tenant: h.Tenant, ControllerID: id, TokenType: h.TokenType, Token: token,
		PollMin: h.PollMin, PollMax: h.PollMax, Attributes: h.Attributes, MaxResumes: h.MaxResumes, Part: h.Part,
		AutoReboot:  d.Config.Reboot == config.RebootAuto,
		OtadVersion: otadVersion(),
		Store:       fleet.Store{FS: j.FS, Path: filepath.Join(d.Config.DataDir, HawkbitStateFile)},
		Credentials: d.Credentials,
		Transport:   tr,
		Log:         logTo(log),
	}, fleet.EngineUpdater{Engine: d.Engine, Journal: j})
}

// serverInOrigins reports whether the hawkBit server lies inside one of
// the [fetch] origins, to which the client certificate is bound.
func serverInOrigins(server string, f config.Fetch) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	for _, o := range f.Origins {
		if po, err := fetch.ParseOrigin(o); err == nil && po.Match(u) {
			return true
		}
	}
	return false
}

// otadVersion is the module version the binary was built from.
func otadVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// logTo adapts a client's level/message/key-value lines to logrus.
func logTo(l *logrus.Entry) func(level slog.Level, msg string, kv ...any) {
	return func(level slog.Level, msg string, kv ...any) {
		f := logrus.Fields{}
		for i := 0; i+1 < len(kv); i += 2 {
			f[fmt.Sprint(kv[i])] = kv[i+1]
		}
		e := l.WithFields(f)
		switch {
		case level >= slog.LevelError:
			e.Error(msg)
		case level >= slog.LevelWarn:
			e.Warn(msg)
		default:
			e.Info(msg)
		}
	}
}

// fleetBackend is the bus backend with the hawkBit client's Poll method
// and Fleet* properties (dbusapi.Fleet).
type fleetBackend struct {
	Backend
	c *hawkbit.Client
}

var _ dbusapi.Fleet = fleetBackend{}

// PollNow makes the client poll at once.
func (f fleetBackend) PollNow() error {
	f.c.PollNow()
	return nil
}

// FleetStatus maps the client's state to the bus properties.
func (f fleetBackend) FleetStatus() dbusapi.FleetStatus {
	i := f.c.Info()
	st := dbusapi.FleetStatus{Server: i.Server, LastPoll: i.LastPoll, NextPoll: i.NextPoll}
	if i.Action != "" {
		st.Action = i.Action + " " + i.Phase
	}
	return st
}

// busBackend is what the bus serves: the engine, plus the fleet client
// when [hawkbit] runs one.
func (d *Daemon) busBackend() dbusapi.Backend {
	if d.Hawkbit != nil {
		return fleetBackend{Backend: Backend{E: d.Engine}, c: d.Hawkbit}
	}
	return Backend{E: d.Engine}
}
