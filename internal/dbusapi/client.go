package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/godbus/dbus/v5"
)

// Client talks to a running otad over D-Bus.
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// RemoteError is an error the service returned; Name is the D-Bus error
// name (ErrBusy, ErrNotAuthorized, …, or a bus error such as
// org.freedesktop.DBus.Error.AccessDenied from the bus policy).
type RemoteError struct {
	Name string
	Msg  string
}

func (e *RemoteError) Error() string {
	if e.Msg == "" {
		return e.Name
	}
	return e.Msg + " (" + e.Name + ")"
}

// Exit codes of otactl, documented in README.md.
const (
	ExitFailure       = 1
	ExitBusy          = 3
	ExitNotAuthorized = 4
	ExitBadBundle     = 5
	ExitNoDaemon      = 6
)

// ExitCode maps the error to otactl's exit status.
func (e *RemoteError) ExitCode() int {
	switch e.Name {
	case ErrBusy:
		return ExitBusy
	case ErrNotAuthorized, "org.freedesktop.DBus.Error.AccessDenied":
		return ExitNotAuthorized
	case ErrBadSignature, ErrIncompatible, ErrDowngrade:
		return ExitBadBundle
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
		return ExitNoDaemon
	}
	return ExitFailure
}

func remote(err error) error {
	var de dbus.Error
	if errors.As(err, &de) {
		msg := ""
		if len(de.Body) > 0 {
			msg = fmt.Sprint(de.Body[0])
		}
		return &RemoteError{Name: de.Name, Msg: msg}
	}
	var dep *dbus.Error
	if errors.As(err, &dep) {
		msg := ""
		if len(dep.Body) > 0 {
			msg = fmt.Sprint(dep.Body[0])
		}
		return &RemoteError{Name: dep.Name, Msg: msg}
	}
	return err
}

// ErrNoBus means the bus could not be reached.
type ErrNoBus struct{ Err error }

func (e *ErrNoBus) Error() string { return "cannot reach the D-Bus system bus: " + e.Err.Error() }
func (e *ErrNoBus) Unwrap() error { return e.Err }
func (e *ErrNoBus) ExitCode() int { return ExitNoDaemon }

// Dial connects to the bus at address, or to the system bus when address
// is empty (DBUS_SYSTEM_BUS_ADDRESS is honoured).
func Dial(ctx context.Context, address string) (*Client, error) {
	var conn *dbus.Conn
	var err error
	if address == "" {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Connect(address, dbus.WithContext(ctx))
	}
	if err != nil {
		return nil, &ErrNoBus{Err: err}
	}
	return &Client{conn: conn, obj: conn.Object(BusName, ObjectPath)}, nil
}

// Close closes the bus connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call invokes a method that returns nothing.
func (c *Client) Call(ctx context.Context, method string, args ...any) error {
	return remote(c.obj.CallWithContext(ctx, Interface+"."+method, 0, args...).Err)
}

// Status reads all properties.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var all map[string]dbus.Variant
	if err := c.obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, Interface).Store(&all); err != nil {
		return Status{}, remote(err)
	}
	var st Status
	get := func(name string, dst any) {
		if v, ok := all[name]; ok {
			_ = v.Store(dst)
		}
	}
	get("Operation", &st.Operation)
	get("Progress", &st.Progress)
	get("LastError", &st.LastError)
	get("BootSlot", &st.BootSlot)
	get("Compatible", &st.Compatible)
	get("Version", &st.Version)
	get("TrialBoot", &st.TrialBoot)
	return st, nil
}

// Slots calls GetSlotStatus.
func (c *Client) Slots(ctx context.Context) ([]SlotStatus, error) {
	var out []SlotStatus
	if err := c.obj.CallWithContext(ctx, Interface+".GetSlotStatus", 0).Store(&out); err != nil {
		return nil, remote(err)
	}
	return out, nil
}

// Inspect calls InspectBundle.
func (c *Client) Inspect(ctx context.Context, source string) (map[string]dbus.Variant, error) {
	var out map[string]dbus.Variant
	if err := c.obj.CallWithContext(ctx, Interface+".InspectBundle", 0, source).Store(&out); err != nil {
		return nil, remote(err)
	}
	return out, nil
}

// InspectFile calls InspectBundleFD with f, which the caller opened with
// its own rights; f stays open.
func (c *Client) InspectFile(ctx context.Context, f *os.File) (map[string]dbus.Variant, error) {
	var out map[string]dbus.Variant
	err := c.obj.CallWithContext(ctx, Interface+".InspectBundleFD", 0, dbus.UnixFD(f.Fd())).Store(&out)
	runtime.KeepAlive(f)
	if err != nil {
		return nil, remote(err)
	}
	return out, nil
}

// Update is one thing Install reports while it waits.
type Update struct {
	Operation string    // set when Operation changed
	Progress  *Progress // set when Progress changed
}

// Install starts an install and waits for its Completed signal, calling
// report for every Operation/Progress change on the way. source is a URL or
// path string, or an *os.File the caller opened (sent as a descriptor,
// InstallFD); an *os.File under opts["fallback-fd"] is sent as one too.
//
// Signals are believed only from the connection that owns BusName when the
// call is made (checked on every signal, whatever the match rules let
// through: a peer can send a signal straight to this connection), and the
// wait ends with an error if that owner leaves the bus.
func (c *Client) Install(ctx context.Context, source any, opts map[string]any, report func(Update)) (tx string, result int32, message string, err error) {
	var owner string
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName).Store(&owner); err != nil {
		return "", 0, "", remote(err)
	}
	sig := make(chan *dbus.Signal, 64)
	c.conn.Signal(sig)
	defer c.conn.RemoveSignal(sig)
	ours := []dbus.MatchOption{dbus.WithMatchObjectPath(ObjectPath), dbus.WithMatchSender(owner)}
	gone := []dbus.MatchOption{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, BusName)}
	for _, m := range [][]dbus.MatchOption{ours, gone} {
		if err := c.conn.AddMatchSignalContext(ctx, m...); err != nil {
			return "", 0, "", remote(err)
		}
		defer func() { _ = c.conn.RemoveMatchSignal(m...) }()
	}

	vopts := make(map[string]dbus.Variant, len(opts))
	for k, v := range opts {
		if f, ok := v.(*os.File); ok {
			v = dbus.UnixFD(f.Fd())
			defer runtime.KeepAlive(f)
		}
		vopts[k] = dbus.MakeVariant(v)
	}
	var call *dbus.Call
	switch src := source.(type) {
	case *os.File:
		call = c.obj.CallWithContext(ctx, Interface+".InstallFD", 0, dbus.UnixFD(src.Fd()), vopts)
		runtime.KeepAlive(src)
	case string:
		call = c.obj.CallWithContext(ctx, Interface+".Install", 0, src, vopts)
	default:
		return "", 0, "", fmt.Errorf("dbusapi: install source of type %T", source)
	}
	if err := call.Store(&tx); err != nil {
		return "", 0, "", remote(err)
	}
	for {
		select {
		case <-ctx.Done():
			return tx, 0, "", ctx.Err()
		case s, ok := <-sig:
			if !ok {
				return tx, 0, "", errors.New("dbusapi: connection closed while waiting for Completed")
			}
			if s.Name == "org.freedesktop.DBus.NameOwnerChanged" && s.Sender == "org.freedesktop.DBus" {
				var name, old, nw string
				if dbus.Store(s.Body, &name, &old, &nw) == nil && name == BusName && old == owner {
					return tx, 0, "", fmt.Errorf("dbusapi: %s left the bus before reporting transaction %s", BusName, tx)
				}
				continue
			}
			if s.Sender != owner || s.Path != ObjectPath {
				continue // not from the service we called: forged or stray
			}
			switch s.Name {
			case Interface + ".Completed":
				var t, msg string
				var res int32
				if dbus.Store(s.Body, &t, &res, &msg) == nil && t == tx {
					return tx, res, msg, nil
				}
			case "org.freedesktop.DBus.Properties.PropertiesChanged":
				if report != nil {
					reportChanges(s, report)
				}
			}
		}
	}
}

// reportChanges passes the Operation and Progress of the service's
// PropertiesChanged signal s to report.
func reportChanges(s *dbus.Signal, report func(Update)) {
	if len(s.Body) < 2 {
		return
	}
	if iface, _ := s.Body[0].(string); iface != Interface {
		return
	}
	changed, _ := s.Body[1].(map[string]dbus.Variant)
	if v, ok := changed["Operation"]; ok {
		var op string
		if v.Store(&op) == nil {
			report(Update{Operation: op})
		}
	}
	if v, ok := changed["Progress"]; ok {
		var p Progress
		if v.Store(&p) == nil {
			report(Update{Progress: &p})
		}
	}
}
