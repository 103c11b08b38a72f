package raucapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/dbusapi"
)

// Options configure Export.
type Options struct {
	// Slots are the two rootfs slots, A and B.
	Slots []Slot
	// Authorizer checks mutating calls; nil is dbusapi's default (root and
	// group otad).
	Authorizer *dbusapi.Authorizer
	// Classify maps backend errors to dbusapi error names; nil maps all
	// to Failed.
	Classify func(error) string
	// Variant is the Variant property (otad has none: "").
	Variant string
	// Logf reports what the log should keep (transaction ids); nil drops it.
	Logf func(format string, args ...any)
	// ChildNodes are listed as <node> children of "/" (see introspectionXML).
	ChildNodes []string
	// NoRequestName skips claiming BusName (tests that share a bus).
	NoRequestName bool
	// Limiter bounds Info and InspectBundle calls in progress; the daemon
	// passes io.otad.Update1's (dbusapi.Server.Limiter) so one bound holds
	// for both faces. nil is a bound of this face's own.
	Limiter *dbusapi.Limiter
}

// Server is the exported Installer object.
type Server struct {
	conn  *dbus.Conn
	b     Backend
	o     Options
	props *properties
	ctx   context.Context
	stop  context.CancelFunc
	done  chan struct{}

	mu sync.Mutex
	// txIDs maps otad transactions to the transaction-id their caller
	// passed, until the install completes.
	txIDs map[string]string
	// installedTx is the caller's transaction-id of the install that last
	// wrote each otad slot (installed.transaction), in memory only.
	installedTx map[string]string
}

// Export publishes b on conn at ObjectPath and claims BusName. The event
// pump runs until Stop or ctx's end.
func Export(ctx context.Context, conn *dbus.Conn, b Backend, o Options) (*Server, error) {
	if len(o.Slots) != 2 {
		return nil, fmt.Errorf("raucapi: want the two rootfs slots, got %d", len(o.Slots))
	}
	if o.Authorizer == nil {
		o.Authorizer = &dbusapi.Authorizer{}
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Limiter == nil {
		o.Limiter = dbusapi.NewLimiter()
	}
	s := &Server{conn: conn, b: b, o: o, done: make(chan struct{}),
		txIDs: map[string]string{}, installedTx: map[string]string{}}
	s.ctx, s.stop = context.WithCancel(ctx)
	st := b.Status()
	s.props = &properties{conn: conn, m: map[string]any{
		"Operation":  operation(st.Operation),
		"LastError":  st.LastError,
		"Progress":   progressOf(st),
		"Compatible": st.Compatible,
		"Variant":    o.Variant,
		"BootSlot":   s.bootname(st.BootSlot),
	}}
	xmlData := introspectionXML(o.ChildNodes)
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
			return nil, fmt.Errorf("raucapi: export %s: %w", e.iface, err)
		}
	}
	events, unsubscribe := b.Subscribe()
	s.publishStatus()
	go s.pump(events, unsubscribe)
	if !o.NoRequestName {
		reply, err := conn.RequestName(BusName, dbus.NameFlagDoNotQueue)
		if err == nil && reply != dbus.RequestNameReplyPrimaryOwner {
			err = ErrNameTaken
		}
		if err != nil {
			s.Stop()
			s.unexport()
			return nil, fmt.Errorf("raucapi: request name %s: %w", BusName, err)
		}
	}
	return s, nil
}

// ErrNameTaken: another connection owns BusName (RAUC's own service?).
var ErrNameTaken = errors.New("the name is owned by another connection (is RAUC's own service running?)")

// unexport removes the object again, so a connection that could not claim
// the name does not answer RAUC's interface under its unique name.
func (s *Server) unexport() {
	for _, iface := range []string{propertiesIface, Interface, introspectIface} {
		_ = s.conn.ExportMethodTable(nil, ObjectPath, iface)
	}
}

// Stop ends the event pump and waits for it. The exported object and the
// name go with the connection.
func (s *Server) Stop() {
	s.stop()
	<-s.done
}

func (s *Server) pump(events <-chan dbusapi.Event, unsubscribe func()) {
	defer close(s.done)
	defer unsubscribe()
	// The ticker republishes what changed without an event reaching us
	// (the engine drops events for a slow subscriber; Status is current).
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
			s.publishStatus()
		}
	}
}

func (s *Server) handle(ev dbusapi.Event) {
	switch ev.Kind {
	case "completed":
		// RAUC's order: LastError is set before Completed, which clients
		// take as the end of the install.
		s.publishStatus()
		s.completed(ev.Tx, ev.Result)
		result := int32(0)
		if ev.Result != 0 {
			result = 1
		}
		_ = s.conn.Emit(ObjectPath, Interface+".Completed", result)
	case "status":
		if ev.Operation != "" {
			s.props.set("Operation", operation(ev.Operation))
		}
		s.publishStatus()
	default:
		s.publishStatus()
	}
}

// completed moves a finished install's transaction-id to the slot it wrote
// (the one not booted) when it succeeded.
func (s *Server) completed(tx string, result int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, had := s.txIDs[tx]
	delete(s.txIDs, tx)
	if result != 0 {
		if had {
			s.o.Logf("rauc transaction %s (otad transaction %s) failed", id, tx)
		}
		return
	}
	target := s.other(s.b.Status().BootSlot)
	if target == nil {
		return
	}
	if had {
		s.installedTx[target.Name] = id
		s.o.Logf("rauc transaction %s (otad transaction %s) installed slot %s", id, tx, target.RaucName)
	} else {
		delete(s.installedTx, target.Name)
	}
}

func (s *Server) publishStatus() {
	st := s.b.Status()
	s.props.set("Operation", operation(st.Operation))
	s.props.set("LastError", st.LastError)
	s.props.set("Progress", progressOf(st))
	s.props.set("Compatible", st.Compatible)
	s.props.set("BootSlot", s.bootname(st.BootSlot))
}

// slot finds an otad slot by otad name.
func (s *Server) slot(name string) *Slot {
	for i := range s.o.Slots {
		if s.o.Slots[i].Name == name {
			return &s.o.Slots[i]
		}
	}
	return nil
}

// other is the slot that is not name (nil if name is no slot).
func (s *Server) other(name string) *Slot {
	if s.slot(name) == nil {
		return nil
	}
	for i := range s.o.Slots {
		if s.o.Slots[i].Name != name {
			return &s.o.Slots[i]
		}
	}
	return nil
}

func (s *Server) bootname(name string) string {
	if sl := s.slot(name); sl != nil {
		return sl.Bootname
	}
	return name
}

// dbusErr names a backend or argument error for the bus.
func (s *Server) dbusErr(err error) *dbus.Error {
	name := dbusapi.ErrFailed
	switch {
	case errors.Is(err, ErrInvalidArgs), errors.Is(err, ErrRefused):
		name = dbusapi.ErrInvalidArgs
	case errors.Is(err, errNoSuchSlot):
		name = dbusapi.ErrNoSuchSlot
	case s.o.Classify != nil:
		if n := s.o.Classify(err); n != "" {
			name = n
		}
	}
	return dbus.NewError(name, []any{err.Error()})
}
