package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/update"
)

// Backend adapts the engine to what the D-Bus server serves.
type Backend struct{ E *update.Engine }

var _ dbusapi.Backend = Backend{}

// Install starts an install.
func (b Backend) Install(ctx context.Context, source string, opts map[string]any) (string, error) {
	return b.E.Install(ctx, source, opts)
}

// Cancel cancels the running install.
func (b Backend) Cancel() error { return b.E.Cancel() }

// Reboot reboots now.
func (b Backend) Reboot(ctx context.Context) error { return b.E.Reboot(ctx) }

// MarkGood marks a slot good.
func (b Backend) MarkGood(s string) error { return b.E.MarkGood(s) }

// MarkBad marks a slot bad.
func (b Backend) MarkBad(s string) error { return b.E.MarkBad(s) }

// MarkActive makes a slot the next boot.
func (b Backend) MarkActive(s string) error { return b.E.MarkActive(s) }

// Inspect verifies a bundle and returns its manifest as a{sv} values.
func (b Backend) Inspect(ctx context.Context, source string) (map[string]any, error) {
	m, err := b.E.Inspect(ctx, source)
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"compatible":       m.Compatible,
		"version":          m.Version,
		"security-version": m.SecurityVersion,
		"created":          m.Created.UTC().Format(time.RFC3339),
		"images":           int32(len(m.Images)),
	}
	if !m.Expires.IsZero() {
		out["expires"] = m.Expires.UTC().Format(time.RFC3339)
	}
	for i, img := range m.Images {
		if i == 0 {
			out["class"], out["size"], out["sha256"], out["encoding"] = img.Class, img.Size, img.SHA256, img.Encoding
		}
	}
	return out, nil
}

// Status maps the engine status to the bus properties.
func (b Backend) Status() dbusapi.Status {
	st := b.E.Status()
	return dbusapi.Status{
		Operation: st.Operation,
		Progress: dbusapi.Progress{Percent: int32(st.Progress.Percent), Done: st.Progress.Done,
			Total: st.Progress.Total, Phase: st.Progress.Phase},
		LastError: st.LastError, BootSlot: st.BootSlot, Compatible: st.Compatible,
		Version: st.Version, TrialBoot: st.TrialBoot,
	}
}

// Slots maps the slot records to GetSlotStatus entries.
func (b Backend) Slots() []dbusapi.SlotStatus {
	var out []dbusapi.SlotStatus
	for _, s := range b.E.Status().Slots {
		p := map[string]dbus.Variant{
			"state":  dbus.MakeVariant(s.State),
			"device": dbus.MakeVariant(s.Device),
		}
		if s.Version != "" {
			p["version"] = dbus.MakeVariant(s.Version)
		}
		if s.SHA256 != "" {
			p["sha256"] = dbus.MakeVariant(s.SHA256)
		}
		if !s.Installed.IsZero() {
			p["installed"] = dbus.MakeVariant(s.Installed.UTC().Format(time.RFC3339))
		}
		if !s.Activated.IsZero() {
			p["activated"] = dbus.MakeVariant(s.Activated.UTC().Format(time.RFC3339))
		}
		if s.Reason != "" {
			p["reason"] = dbus.MakeVariant(s.Reason)
		}
		out = append(out, dbusapi.SlotStatus{Name: s.Name, Props: p})
	}
	return out
}

// Subscribe relays engine events; "operation" becomes "status" carrying
// the operation entered.
func (b Backend) Subscribe() (<-chan dbusapi.Event, func()) {
	in, stop := b.E.Subscribe()
	out := make(chan dbusapi.Event, 64)
	go func() {
		defer close(out)
		for ev := range in {
			d := dbusapi.Event{Kind: ev.Kind, Tx: ev.Tx, Result: int32(ev.Result), Message: ev.Message, Slot: ev.Slot, Reason: ev.Reason}
			if ev.Kind == "operation" {
				// The operation entered travels with the event: a short
				// phase (downloading a local file) is over before the
				// server reads Status.
				d.Kind, d.Operation = "status", ev.Message
			}
			out <- d
		}
	}()
	return out, stop
}

// Classify names backend errors for the bus.
func Classify(err error) string {
	switch {
	case errors.Is(err, update.ErrBusy):
		return dbusapi.ErrBusy
	case errors.Is(err, update.ErrCanceled):
		return dbusapi.ErrCanceled
	case errors.Is(err, update.ErrNoSuchSlot):
		return dbusapi.ErrNoSuchSlot
	case errors.Is(err, bundle.ErrBadSignature), errors.Is(err, bundle.ErrUnknownKey), errors.Is(err, bundle.ErrThreshold):
		return dbusapi.ErrBadSignature
	case errors.Is(err, bundle.ErrIncompatible):
		return dbusapi.ErrIncompatible
	case errors.Is(err, bundle.ErrDowngrade):
		return dbusapi.ErrDowngrade
	}
	return ""
}

// ServeSystemBus is the production Serve: export the engine on the system
// bus as io.otad.Update1 until ctx ends.
func ServeSystemBus(ctx context.Context, d *Daemon) error { return ServeBus("")(ctx, d) }

// ServeBus exports the engine on the bus at address (empty: the system
// bus, honouring DBUS_SYSTEM_BUS_ADDRESS) until ctx ends; with [compat]
// rauc-dbus also as RAUC's Installer on the same connection (rauc.go).
func ServeBus(address string) func(ctx context.Context, d *Daemon) error {
	return func(ctx context.Context, d *Daemon) error {
		var conn *dbus.Conn
		var err error
		if address == "" {
			conn, err = dbus.ConnectSystemBus(dbus.WithIncomingInterceptor(dbusapi.CloseStrayFDs))
		} else {
			conn, err = dbus.Connect(address, dbus.WithIncomingInterceptor(dbusapi.CloseStrayFDs))
		}
		if err != nil {
			return fmt.Errorf("d-bus: %w", err)
		}
		defer conn.Close()
		srv, err := dbusapi.Export(ctx, conn, d.busBackend(), dbusapi.Options{Authorizer: &dbusapi.Authorizer{}, Classify: Classify,
			Logf: d.log.WithField("component", "dbus").Infof})
		if err != nil {
			return err
		}
		stopRAUC, err := exportRAUC(ctx, conn, d, srv.Limiter())
		if err != nil {
			srv.Stop()
			return err
		}
		<-ctx.Done()
		stopRAUC()
		srv.Stop()
		return nil
	}
}
