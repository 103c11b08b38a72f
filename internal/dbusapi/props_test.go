package dbusapi

import (
	"context"
	"encoding/xml"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"
)

// The hand-written standard interfaces answer as godbus/prop and
// godbus/introspect did: same error names, same introspection data.
func TestStandardInterfaces(t *testing.T) {
	b := newFake(1, time.Millisecond)
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	obj := c.conn.Object(BusName, ObjectPath)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var v dbus.Variant
	if err := obj.CallWithContext(ctx, propertiesIface+".Get", 0, Interface, "Compatible").Store(&v); err != nil {
		t.Fatal(err)
	}
	if s, ok := v.Value().(string); !ok || s != "test-board" {
		t.Fatalf("Get Compatible = %v", v)
	}
	if err := obj.CallWithContext(ctx, propertiesIface+".Get", 0, Interface, "Progress").Store(&v); err != nil || v.Signature().String() != "(ixxs)" {
		t.Fatalf("Get Progress = %v (%v), want signature (ixxs)", v, err)
	}
	wantErr := func(what, name string, err error) {
		t.Helper()
		var re *RemoteError
		if !errors.As(remote(err), &re) || re.Name != name {
			t.Errorf("%s: %v, want %s", what, err, name)
		}
	}
	wantErr("Get of another interface", "org.freedesktop.DBus.Properties.Error.InterfaceNotFound",
		obj.CallWithContext(ctx, propertiesIface+".Get", 0, "io.otad.Nope", "Version").Err)
	wantErr("Get of an unknown property", "org.freedesktop.DBus.Properties.Error.PropertyNotFound",
		obj.CallWithContext(ctx, propertiesIface+".Get", 0, Interface, "Nope").Err)
	wantErr("GetAll of another interface", "org.freedesktop.DBus.Properties.Error.InterfaceNotFound",
		obj.CallWithContext(ctx, propertiesIface+".GetAll", 0, "io.otad.Nope").Err)
	wantErr("Set", "org.freedesktop.DBus.Properties.Error.ReadOnly",
		obj.CallWithContext(ctx, propertiesIface+".Set", 0, Interface, "BootSlot", dbus.MakeVariant("B")).Err)
	if st, err := c.Status(ctx); err != nil || st.BootSlot != "A" {
		t.Fatalf("after a refused Set: %+v, %v", st, err)
	}
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
		t.Fatalf("Peer.Ping: %v", err)
	}

	var data string
	if err := obj.CallWithContext(ctx, introspectIface+".Introspect", 0).Store(&data); err != nil {
		t.Fatal(err)
	}
	var n introspect.Node
	if err := xml.Unmarshal([]byte(data), &n); err != nil {
		t.Fatalf("introspection is not XML: %v\n%s", err, data)
	}
	var names []string
	got := map[string]introspect.Interface{}
	for _, i := range n.Interfaces {
		names = append(names, i.Name)
		got[i.Name] = i
	}
	if want := []string{introspectIface, propertiesIface, Interface, "org.freedesktop.DBus.Peer"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("interfaces %v, want %v", names, want)
	}
	for _, want := range []introspect.Interface{introspect.IntrospectData, prop.IntrospectData, introspect.PeerData} {
		g := got[want.Name]
		if !reflect.DeepEqual(ifaceSummary(g), ifaceSummary(want)) {
			t.Errorf("%s introspection\n got %v\nwant %v", want.Name, ifaceSummary(g), ifaceSummary(want))
		}
	}
}

// A property set to its current value emits nothing; a change emits one
// PropertiesChanged carrying the new value.
func TestPropertiesChangedOnlyOnChange(t *testing.T) {
	b := newFake(1, time.Millisecond)
	addr, _ := startBus(t, includePolicy(t))
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv, err := Export(context.Background(), conn, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	c := dialT(t, addr)
	sig := make(chan *dbus.Signal, 16)
	c.conn.Signal(sig)
	if err := c.conn.AddMatchSignal(dbus.WithMatchObjectPath(ObjectPath), dbus.WithMatchInterface(propertiesIface)); err != nil {
		t.Fatal(err)
	}
	// The backend agrees with the new value, so the pump's once-a-second
	// catch-up finds nothing more to publish.
	srv.set("Version", "1.0") // unchanged
	b.mu.Lock()
	b.st.Version = "2.0"
	b.mu.Unlock()
	srv.set("Version", "2.0")
	next := func(wait time.Duration) *dbus.Signal {
		deadline := time.After(wait)
		for {
			select {
			case s := <-sig:
				if s.Name == propertiesChanged {
					return s
				}
			case <-deadline:
				return nil
			}
		}
	}
	s := next(5 * time.Second)
	if s == nil {
		t.Fatal("no PropertiesChanged for a change")
	}
	if len(s.Body) != 3 || s.Body[0] != Interface {
		t.Fatalf("signal body %v", s.Body)
	}
	changed, _ := s.Body[1].(map[string]dbus.Variant)
	if len(changed) != 1 || changed["Version"].Value() != "2.0" {
		t.Fatalf("changed %v, want only Version=2.0", changed)
	}
	if s := next(1500 * time.Millisecond); s != nil {
		t.Fatalf("second PropertiesChanged %v for one change", s.Body)
	}
}
