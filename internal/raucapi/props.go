package raucapi

import (
	"reflect"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/dbusapi"
)

// Hand-written like dbusapi's, for the same reason: conn.Export and
// godbus/prop reach reflect.Value.Method, which keeps every exported method
// of the binary alive, and the introspection is a constant.
const (
	propertiesIface   = "org.freedesktop.DBus.Properties"
	introspectIface   = "org.freedesktop.DBus.Introspectable"
	propertiesChanged = propertiesIface + ".PropertiesChanged"
)

var (
	errIfaceNotFound = dbus.NewError(propertiesIface+".Error.InterfaceNotFound", nil)
	errPropNotFound  = dbus.NewError(propertiesIface+".Error.PropertyNotFound", nil)
	errReadOnly      = dbus.NewError(propertiesIface+".Error.ReadOnly", nil)
)

// introspection is what "/" answers (introspectionXML adds the child
// nodes). The Installer part is written from
// the member table of RAUC's published interface (rauc_test.go in
// internal/daemon holds that table and compares the running service with
// it); argument names follow RAUC's so generated client code matches.
const introspection = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
` + dbusapi.StandardInterfacesXML + `  <interface name="de.pengutronix.rauc.Installer">
    <method name="Install">
      <arg name="source" type="s" direction="in"/>
    </method>
    <method name="InstallBundle">
      <arg name="source" type="s" direction="in"/>
      <arg name="args" type="a{sv}" direction="in"/>
    </method>
    <method name="Info">
      <arg name="bundle" type="s" direction="in"/>
      <arg name="compatible" type="s" direction="out"/>
      <arg name="version" type="s" direction="out"/>
    </method>
    <method name="InspectBundle">
      <arg name="source" type="s" direction="in"/>
      <arg name="args" type="a{sv}" direction="in"/>
      <arg name="info" type="a{sv}" direction="out"/>
    </method>
    <method name="Mark">
      <arg name="state" type="s" direction="in"/>
      <arg name="slot_identifier" type="s" direction="in"/>
      <arg name="slot_name" type="s" direction="out"/>
      <arg name="message" type="s" direction="out"/>
    </method>
    <method name="GetSlotStatus">
      <arg name="slot_status_array" type="a(sa{sv})" direction="out"/>
    </method>
    <method name="GetArtifactStatus">
      <arg name="artifacts" type="aa{sv}" direction="out"/>
    </method>
    <method name="GetPrimary">
      <arg name="primary" type="s" direction="out"/>
    </method>
    <signal name="Completed">
      <arg name="result" type="i"/>
    </signal>
    <property name="Operation" type="s" access="read"/>
    <property name="LastError" type="s" access="read"/>
    <property name="Progress" type="(isi)" access="read"/>
    <property name="Compatible" type="s" access="read"/>
    <property name="Variant" type="s" access="read"/>
    <property name="BootSlot" type="s" access="read"/>
  </interface>
`

// introspectionXML is introspection with a <node> line for each child
// (the first element of other objects' paths on the same connection, so
// that busctl tree still finds them below "/").
func introspectionXML(children []string) string {
	var b strings.Builder
	b.WriteString(introspection)
	for _, c := range children {
		b.WriteString(`  <node name="` + c + `"/>` + "\n")
	}
	b.WriteString("</node>\n")
	return b.String()
}

// properties holds the Installer's read-only properties and emits
// PropertiesChanged with the new value whenever one changes.
type properties struct {
	conn *dbus.Conn
	mu   sync.Mutex
	m    map[string]any
}

// set stores v and emits the change; an equal value emits nothing. The
// signal goes out under the lock so listeners see one property's changes
// in the order they were made.
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

func (p *properties) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	if iface != Interface {
		return dbus.Variant{}, errIfaceNotFound
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[name]
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
	p.mu.Lock()
	_, ok := p.m[name]
	p.mu.Unlock()
	if !ok {
		return errPropNotFound
	}
	return errReadOnly
}

func (p *properties) methodTable() map[string]any {
	return map[string]any{"Get": p.Get, "GetAll": p.GetAll, "Set": p.Set}
}
