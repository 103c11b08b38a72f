package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/raucapi"
	"github.com/otadev/otad/internal/update"
)

// exportRAUC serves RAUC's Installer interface on conn next to
// io.otad.Update1 when [compat] rauc-dbus is on; stop ends its event pump.
// Off, it does nothing and stop is a no-op. When the face cannot be served
// (RAUC's own service holds the name) the error is logged and otad keeps
// serving io.otad.Update1: a compat face must not take the update API down
// (and with it the way to install a fix). lim is io.otad.Update1's bound
// on calls in progress: one bound for both faces, so a caller cannot
// double its share of inspects by using both.
func exportRAUC(ctx context.Context, conn *dbus.Conn, d *Daemon, lim *dbusapi.Limiter) (stop func(), err error) {
	if !d.Config.Compat.RaucDBus {
		return func() {}, nil
	}
	slots := RaucSlots(d.Config)
	b := raucBackend{b: Backend{E: d.Engine}, boot: &boot.Protocol{Store: d.env}, slots: slots}
	// "/" is shared with io.otad.Update1's object: list its first path
	// element as a child so busctl tree still finds it.
	child, _, _ := strings.Cut(strings.TrimPrefix(string(dbusapi.ObjectPath), "/"), "/")
	srv, err := raucapi.Export(ctx, conn, b, raucapi.Options{
		Slots:      slots,
		Authorizer: &dbusapi.Authorizer{},
		Classify:   Classify,
		Logf:       d.log.WithField("component", "rauc-dbus").Infof,
		ChildNodes: []string{child},
		Limiter:    lim,
	})
	if err != nil {
		d.log.WithError(err).Error("[compat] rauc-dbus: not serving RAUC's interface; io.otad.Update1 is unaffected")
		return func() {}, nil
	}
	return srv.Stop, nil
}

// RaucSlots names the rootfs slots as RAUC does: the section name without
// "slot." ([slot.rootfs.0] is rootfs.0), in section order.
func RaucSlots(cfg *config.Config) []raucapi.Slot {
	var out []raucapi.Slot
	for _, s := range cfg.Slots {
		if s.Class != update.RootfsClass {
			continue
		}
		out = append(out, raucapi.Slot{Name: s.Name, RaucName: fmt.Sprintf("%s.%d", s.Class, s.Index),
			Class: s.Class, Device: s.Device, Type: s.Type, Bootname: s.Bootname})
	}
	return out
}

// raucBackend is the engine behind the same Backend io.otad.Update1 uses,
// plus what RAUC's interface needs on top: per-call fetch arguments and
// the slot the boot loader starts next.
type raucBackend struct {
	b     Backend
	boot  *boot.Protocol // reads the env only
	slots []raucapi.Slot
}

// requestOptions hands a caller's fetch arguments to the daemon's
// OpenSource as the engine's "source-options".
func requestOptions(a raucapi.Access) fetch.RequestOptions {
	return fetch.RequestOptions{Headers: a.Headers, CertFile: a.TLSCert, KeyFile: a.TLSKey, CAFile: a.TLSCA}
}

func (r raucBackend) Install(ctx context.Context, source string, a raucapi.Access) (string, error) {
	var opts map[string]any
	if !a.IsZero() {
		opts = map[string]any{"source-options": requestOptions(a)}
	}
	return r.b.Install(ctx, source, opts)
}

func (r raucBackend) Inspect(ctx context.Context, source string, a raucapi.Access) (map[string]any, error) {
	if !a.IsZero() {
		ctx = update.WithSourceOptions(ctx, requestOptions(a))
	}
	return r.b.Inspect(ctx, source)
}

func (r raucBackend) MarkGood(s string) error                   { return r.b.MarkGood(s) }
func (r raucBackend) MarkBad(s string) error                    { return r.b.MarkBad(s) }
func (r raucBackend) MarkActive(s string) error                 { return r.b.MarkActive(s) }
func (r raucBackend) Status() dbusapi.Status                    { return r.b.Status() }
func (r raucBackend) Slots() []dbusapi.SlotStatus               { return r.b.Slots() }
func (r raucBackend) Subscribe() (<-chan dbusapi.Event, func()) { return r.b.Subscribe() }

// Primary reads the boot env: otad_slot holds the bootname U-Boot starts.
func (r raucBackend) Primary() (string, error) {
	st, err := r.boot.State()
	if err != nil {
		return "", fmt.Errorf("boot env: %w", err)
	}
	for _, s := range r.slots {
		if s.Bootname == st.Slot {
			return s.Name, nil
		}
	}
	return "", fmt.Errorf("boot env: otad_slot=%q names no configured slot", st.Slot)
}
