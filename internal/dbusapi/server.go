package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// Server is the exported io.otad.Update1 object.
type Server struct {
	conn    *dbus.Conn
	backend Backend
	authz   *Authorizer
	props   *properties
	// Classify maps a backend error to a D-Bus error name (ErrorPrefix+…).
	classify func(error) string
	// ctx bounds the calls the server makes into the backend.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu           sync.Mutex
	lastProgress Progress
	lastEmit     time.Time
	clock        func() time.Time
}

// Options configure Export.
type Options struct {
	Authorizer *Authorizer
	// Classify maps backend errors to error names; nil maps all to Failed.
	Classify func(error) string
	// Clock for progress coalescing; nil is time.Now.
	Clock func() time.Time
	// NoRequestName skips claiming BusName (tests that share a bus).
	NoRequestName bool
}

// Export publishes backend on conn at ObjectPath and claims BusName.
// Stop undoes nothing on the bus (the connection's close does); it ends
// the event pump.
func Export(ctx context.Context, conn *dbus.Conn, backend Backend, o Options) (*Server, error) {
	if o.Authorizer == nil {
		o.Authorizer = &Authorizer{}
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	s := &Server{conn: conn, backend: backend, authz: o.Authorizer, classify: o.Classify, clock: o.Clock, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(ctx)

	st := backend.Status()
	s.props = &properties{conn: conn, m: map[string]any{
		"Operation":  st.Operation,
		"Progress":   st.Progress,
		"LastError":  st.LastError,
		"BootSlot":   st.BootSlot,
		"Compatible": st.Compatible,
		"Version":    st.Version,
		"TrialBoot":  st.TrialBoot,
	}}
	for k, v := range fleetProps(backend) { // fleet.go
		s.props.m[k] = v
	}
	xmlData, err := introspectionXML()
	if err != nil {
		return nil, err
	}
	// Method tables rather than conn.Export: see props.go.
	introspect := func() (string, *dbus.Error) { return xmlData, nil }
	for _, e := range []struct {
		iface   string
		methods map[string]any
	}{
		{propertiesIface, s.props.methodTable()},
		{Interface, (*object)(s).methodTable()},
		{introspectIface, map[string]any{"Introspect": introspect}},
	} {
		if err := conn.ExportMethodTable(e.methods, ObjectPath, e.iface); err != nil {
			return nil, fmt.Errorf("dbusapi: export %s: %w", e.iface, err)
		}
	}
	events, unsubscribe := backend.Subscribe()
	// Whatever happened between reading the initial values and subscribing
	// (a trial boot confirmed within the first moments) is published now.
	s.publishStatus()
	go s.pump(events, unsubscribe)
	if !o.NoRequestName {
		reply, err := conn.RequestName(BusName, dbus.NameFlagDoNotQueue)
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("dbusapi: request name %s: %w", BusName, err)
		}
		if reply != dbus.RequestNameReplyPrimaryOwner {
			s.Stop()
			return nil, fmt.Errorf("dbusapi: name %s is taken (another otad running?)", BusName)
		}
	}
	return s, nil
}

// Stop ends the event pump and waits for it.
func (s *Server) Stop() {
	s.cancel()
	<-s.done
}

func (s *Server) pump(events <-chan Event, unsubscribe func()) {
	defer close(s.done)
	defer unsubscribe()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			s.handle(ev)
		case <-tick.C:
			// Guarantees a progress update at least once a second even
			// when the backend's events were coalesced away, and that the
			// properties never stay behind the backend for longer (set
			// emits only what changed).
			s.publishStatus()
			s.publishProgress()
		}
	}
}

func (s *Server) handle(ev Event) {
	switch ev.Kind {
	case "progress":
		s.publishProgress()
	case "completed":
		s.publishStatus()
		s.publishProgress()
		_ = s.conn.Emit(ObjectPath, Interface+".Completed", ev.Tx, ev.Result, ev.Message)
	case "rolledback":
		s.publishStatus()
		_ = s.conn.Emit(ObjectPath, Interface+".RolledBack", ev.Slot, ev.Reason)
	default:
		if ev.Operation != "" {
			s.set("Operation", ev.Operation)
		}
		s.publishStatus()
	}
}

func (s *Server) publishStatus() {
	st := s.backend.Status()
	s.set("Operation", st.Operation)
	s.set("LastError", st.LastError)
	s.set("BootSlot", st.BootSlot)
	s.set("Compatible", st.Compatible)
	s.set("Version", st.Version)
	s.set("TrialBoot", st.TrialBoot)
	s.publishFleet() // fleet.go
}

// publishProgress emits Progress when the percent or phase moved, or when
// bytes moved and the last emission is a second old; the pump's ticker calls
// it every second so slow phases still report.
func (s *Server) publishProgress() {
	p := s.backend.Status().Progress
	s.mu.Lock()
	now := s.clock()
	changed := p != s.lastProgress
	stepped := p.Percent != s.lastProgress.Percent || p.Phase != s.lastProgress.Phase
	due := now.Sub(s.lastEmit) >= time.Second
	emit := changed && (stepped || due)
	if emit {
		s.lastProgress, s.lastEmit = p, now
	}
	s.mu.Unlock()
	if emit {
		s.set("Progress", p)
	}
}

func (s *Server) set(name string, v any) { s.props.set(name, v) }

// dbusErr turns a backend error into a named D-Bus error.
func (s *Server) dbusErr(err error) *dbus.Error {
	if err == nil {
		return nil
	}
	name := ErrFailed
	if s.classify != nil {
		if n := s.classify(err); n != "" {
			name = n
		}
	}
	if errors.Is(err, ErrUnknownOption) {
		name = ErrInvalidArgs
	}
	return dbus.NewError(name, []any{err.Error()})
}

// object carries the exported methods; its method table is the contract.
type object Server

func (o *object) srv() *Server { return (*Server)(o) }

// methodTable is what io.otad.Update1 exports; a test holds it to the
// contract XML.
func (o *object) methodTable() map[string]any {
	return map[string]any{
		"Install":       o.Install,
		"Cancel":        o.Cancel,
		"Reboot":        o.Reboot,
		"MarkGood":      o.MarkGood,
		"MarkBad":       o.MarkBad,
		"MarkActive":    o.MarkActive,
		"GetSlotStatus": o.GetSlotStatus,
		"InspectBundle": o.InspectBundle,
		"Poll":          o.Poll, // fleet.go
	}
}

func (o *object) Install(sender dbus.Sender, source string, options map[string]dbus.Variant) (string, *dbus.Error) {
	s := o.srv()
	if e := s.authz.check(s.conn, sender, "Install"); e != nil {
		return "", e
	}
	opts, err := decodeOptions(options)
	if err != nil {
		return "", s.dbusErr(err)
	}
	tx, err := s.backend.Install(s.ctx, source, opts)
	if err != nil {
		return "", s.dbusErr(err)
	}
	return tx, nil
}

func decodeOptions(in map[string]dbus.Variant) (map[string]any, error) {
	out := make(map[string]any, len(in))
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want, ok := InstallOptions[k]
		if !ok {
			return nil, fmt.Errorf("%w %q (known: reboot, skip-unchanged, fallback)", ErrUnknownOption, k)
		}
		v := in[k]
		if v.Signature().String() != want {
			return nil, fmt.Errorf("%w %q: type %s, want %s", ErrUnknownOption, k, v.Signature(), want)
		}
		if s, ok := v.Value().(string); ok && s == "" {
			return nil, fmt.Errorf("%w %q: empty", ErrUnknownOption, k)
		}
		out[k] = v.Value()
	}
	return out, nil
}

func (o *object) Cancel(sender dbus.Sender) *dbus.Error {
	s := o.srv()
	if e := s.authz.check(s.conn, sender, "Cancel"); e != nil {
		return e
	}
	return s.dbusErr(s.backend.Cancel())
}

func (o *object) Reboot(sender dbus.Sender) *dbus.Error {
	s := o.srv()
	if e := s.authz.check(s.conn, sender, "Reboot"); e != nil {
		return e
	}
	return s.dbusErr(s.backend.Reboot(s.ctx))
}

func (o *object) MarkGood(sender dbus.Sender, slot string) *dbus.Error {
	s := o.srv()
	if e := s.authz.check(s.conn, sender, "MarkGood"); e != nil {
		return e
	}
	return s.dbusErr(s.backend.MarkGood(slot))
}

func (o *object) MarkBad(sender dbus.Sender, slot string) *dbus.Error {
	s := o.srv()
	if e := s.authz.check(s.conn, sender, "MarkBad"); e != nil {
		return e
	}
	return s.dbusErr(s.backend.MarkBad(slot))
}

func (o *object) MarkActive(sender dbus.Sender, slot string) *dbus.Error {
	s := o.srv()
	if e := s.authz.check(s.conn, sender, "MarkActive"); e != nil {
		return e
	}
	return s.dbusErr(s.backend.MarkActive(slot))
}

// slotEntry is the D-Bus struct (sa{sv}).
type slotEntry struct {
	Name  string
	Props map[string]dbus.Variant
}

func (o *object) GetSlotStatus() ([]slotEntry, *dbus.Error) {
	slots := o.srv().backend.Slots()
	out := make([]slotEntry, len(slots))
	for i, sl := range slots {
		out[i] = slotEntry(sl)
		if out[i].Props == nil {
			out[i].Props = map[string]dbus.Variant{}
		}
	}
	return out, nil
}

func (o *object) InspectBundle(source string) (map[string]dbus.Variant, *dbus.Error) {
	s := o.srv()
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	info, err := s.backend.Inspect(ctx, source)
	if err != nil {
		return nil, s.dbusErr(err)
	}
	out := make(map[string]dbus.Variant, len(info))
	for k, v := range info {
		out[k] = dbus.MakeVariant(v)
	}
	return out, nil
}
