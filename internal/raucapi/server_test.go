package raucapi

import (
	"encoding/xml"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

func installerIface(t *testing.T) introspect.Interface {
	t.Helper()
	var n introspect.Node
	if err := xml.Unmarshal([]byte(introspectionXML([]string{"io"})), &n); err != nil {
		t.Fatal(err)
	}
	if len(n.Children) != 1 || n.Children[0].Name != "io" {
		t.Fatalf("children %+v", n.Children)
	}
	for _, i := range n.Interfaces {
		if i.Name == Interface {
			return i
		}
	}
	t.Fatalf("no %s in the introspection", Interface)
	return introspect.Interface{}
}

// The method table serves exactly the introspected methods, with argument
// types derived from the Go signatures (dbus.Sender is not on the wire),
// and every property carries the introspected type. The daemon's test
// compares the same introspection, read from the running service, with
// RAUC's own list.
func TestMethodTableMatchesIntrospection(t *testing.T) {
	want := map[string]string{}
	for _, m := range installerIface(t).Methods {
		var in, out []string
		for _, a := range m.Args {
			if a.Direction == "out" {
				out = append(out, a.Type)
			} else {
				in = append(in, a.Type)
			}
		}
		want[m.Name] = "(" + strings.Join(in, ",") + ")->(" + strings.Join(out, ",") + ")"
	}
	senderT := reflect.TypeOf(dbus.Sender(""))
	errT := reflect.TypeOf((*dbus.Error)(nil))
	got := map[string]string{}
	for name, fn := range (*object)(&Server{}).methodTable() {
		ft := reflect.TypeOf(fn)
		if ft.NumOut() == 0 || ft.Out(ft.NumOut()-1) != errT {
			t.Errorf("%s: %v does not end in *dbus.Error; godbus would skip it", name, ft)
			continue
		}
		var in, out []string
		for j := 0; j < ft.NumIn(); j++ {
			if ft.In(j) != senderT {
				in = append(in, dbus.SignatureOfType(ft.In(j)).String())
			}
		}
		for j := 0; j < ft.NumOut()-1; j++ {
			out = append(out, dbus.SignatureOfType(ft.Out(j)).String())
		}
		got[name] = "(" + strings.Join(in, ",") + ")->(" + strings.Join(out, ",") + ")"
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("method table differs from the introspection\n got %v\nwant %v", got, want)
	}
	props := map[string]string{
		"Operation": "s", "LastError": "s", "Compatible": "s", "Variant": "s", "BootSlot": "s",
		"Progress": dbus.SignatureOf(progress{}).String(),
	}
	var names []string
	for _, p := range installerIface(t).Properties {
		names = append(names, p.Name)
		if props[p.Name] != p.Type || p.Access != "read" {
			t.Errorf("property %s: introspected %s %s, served %q", p.Name, p.Type, p.Access, props[p.Name])
		}
	}
	sort.Strings(names)
	if len(names) != len(props) {
		t.Errorf("introspected properties %v, served %d", names, len(props))
	}
}

var testSlots = []Slot{
	{Name: "A", RaucName: "rootfs.0", Class: "rootfs", Device: "/dev/mmcblk0p2", Type: "block", Bootname: "A"},
	{Name: "B", RaucName: "rootfs.1", Class: "rootfs", Device: "/dev/mmcblk0p3", Type: "block", Bootname: "B"},
}

func TestSlotDict(t *testing.T) {
	otad := map[string]dbus.Variant{
		"state": v("bad"), "device": v("/dev/mmcblk0p3"), "version": v("2.0"), "sha256": v("ab12"),
		"installed": v("2026-12-07T10:00:00Z"), "activated": v("2026-12-07T10:05:00Z"), "reason": v("health check failed"),
	}
	got := slotDict(testSlots[1], otad, "A", "acme-gw-v1", "tx-1")
	want := map[string]dbus.Variant{
		"class": v("rootfs"), "device": v("/dev/mmcblk0p3"), "type": v("block"), "bootname": v("B"),
		"state": v("inactive"), "boot-status": v("bad"), "otad.state": v("bad"), "otad.reason": v("health check failed"),
		"bundle.compatible": v("acme-gw-v1"), "bundle.version": v("2.0"), "sha256": v("ab12"), "status": v("failed"),
		"installed.timestamp": v("2026-12-07T10:00:00Z"), "activated.timestamp": v("2026-12-07T10:05:00Z"),
		"installed.transaction": v("tx-1"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	// The booted slot, never installed by otad: no bundle keys.
	got = slotDict(testSlots[0], map[string]dbus.Variant{"state": v("active"), "device": v("/dev/mmcblk0p2")}, "A", "acme-gw-v1", "")
	for k, w := range map[string]string{"state": "booted", "boot-status": "good", "otad.state": "active"} {
		if got[k].Value() != w {
			t.Errorf("booted slot %s = %v, want %s", k, got[k], w)
		}
	}
	for _, k := range []string{"bundle.version", "sha256", "status", "installed.transaction"} {
		if _, ok := got[k]; ok {
			t.Errorf("booted slot without a record has %s", k)
		}
	}
}

func TestInspectDict(t *testing.T) {
	got := inspectDict(map[string]any{"compatible": "acme", "version": "2.0", "security-version": uint64(2),
		"created": "2026-12-07T10:00:00Z", "images": int32(1), "class": "rootfs", "size": int64(4096), "sha256": "ab", "encoding": "zstd"})
	upd := got["update"].Value().(map[string]dbus.Variant)
	if upd["compatible"].Value() != "acme" || upd["version"].Value() != "2.0" {
		t.Fatalf("update %v", upd)
	}
	imgs := got["images"].Value().([]map[string]dbus.Variant)
	if len(imgs) != 1 || imgs[0]["slot-class"].Value() != "rootfs" || imgs[0]["size"].Value() != uint64(4096) || imgs[0]["checksum"].Value() != "ab" {
		t.Fatalf("images %v", imgs)
	}
	if got["otad.security-version"].Value() != uint64(2) {
		t.Fatalf("%v", got)
	}
}
