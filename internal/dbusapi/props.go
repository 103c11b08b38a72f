package dbusapi

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
)

// The standard interfaces served next to io.otad.Update1, hand-written
// instead of godbus/prop and godbus/introspect: those register through
// conn.Export, whose reflect.Value.Method call makes the linker keep every
// exported method of every reachable type (about a megabyte on the device),
// and introspect pulls in encoding/xml to build what is a constant string.
const (
	propertiesIface   = "org.freedesktop.DBus.Properties"
	introspectIface   = "org.freedesktop.DBus.Introspectable"
	propertiesChanged = propertiesIface + ".PropertiesChanged"
)

// Errors of org.freedesktop.DBus.Properties, named as godbus/prop names them.
var (
	errIfaceNotFound = dbus.NewError(propertiesIface+".Error.InterfaceNotFound", nil)
	errPropNotFound  = dbus.NewError(propertiesIface+".Error.PropertyNotFound", nil)
	errReadOnly      = dbus.NewError(propertiesIface+".Error.ReadOnly", nil)
)

// StandardInterfacesXML is the introspection of org.freedesktop.DBus
// Introspectable and Properties, for every face otad serves (io.otad.Update1
// and RAUC's Installer).
const StandardInterfacesXML = introspectableXML + peerXML

const introspectableXML = `  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="out" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface" type="s" direction="in"/>
      <arg name="property" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface" type="s" direction="in"/>
      <arg name="props" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface" type="s" direction="in"/>
      <arg name="property" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidates_properties" type="as"/>
    </signal>
  </interface>
`

// godbus answers org.freedesktop.DBus.Peer on every object itself.
const peerXML = `  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
`

// introspectionXML is the contract with the standard interfaces spliced in
// around io.otad.Update1 (Introspectable and Properties before it, Peer
// after it), so the checked-in file stays the single source.
func introspectionXML() (string, error) {
	open := `  <interface name="` + Interface + `">`
	i := strings.Index(contractXML, open)
	j := strings.LastIndex(contractXML, "</node>")
	if i < 0 || j < i {
		return "", fmt.Errorf("dbusapi: contract XML: no %s interface inside <node>", Interface)
	}
	return contractXML[:i] + introspectableXML + contractXML[i:j] + peerXML + contractXML[j:], nil
}

// properties holds io.otad.Update1's read-only properties and emits
// PropertiesChanged (with the new value) whenever one changes.
type properties struct {
	conn *dbus.Conn
	mu   sync.Mutex
	m    map[string]any
}

func (p *properties) get(name string) (any, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[name]
	return v, ok
}

// set stores v and emits the change; an equal value is no change and emits
// nothing (DeepEqual, not ==, so a property of a slice or map type can never
// panic here). The signal goes out under the lock so that listeners see
// changes of one property in the order they were made.
func (p *properties) set(name string, v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.m[name]; ok && reflect.DeepEqual(cur, v) {
		return
	}
	p.m[name] = v
	_ = p.conn.Emit(ObjectPath, propertiesChanged, Interface,
		map[string]dbus.Variant{name: dbus.MakeVariant(v)}, []string{})
}

// Get, GetAll and Set are org.freedesktop.DBus.Properties.
func (p *properties) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	if iface != Interface {
		return dbus.Variant{}, errIfaceNotFound
	}
	v, ok := p.get(name)
	if !ok {
		return dbus.Variant{}, errPropNotFound
	}
	return dbus.MakeVariant(v), nil
}

func (p *properties) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != Interface {
		return nil, errIfaceNotFound
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]dbus.Variant, len(p.m))
	for k, v := range p.m {
		out[k] = dbus.MakeVariant(v)
	}
	return out, nil
}

func (p *properties) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	if iface != Interface {
		return errIfaceNotFound
	}
	if _, ok := p.get(name); !ok {
		return errPropNotFound
	}
	return errReadOnly
}

func (p *properties) methodTable() map[string]any {
	return map[string]any{"Get": p.Get, "GetAll": p.GetAll, "Set": p.Set}
}
