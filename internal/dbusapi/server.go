package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/fetch"
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

	logf func(format string, args ...any)
	// calls and inspects are semaphores: every method call in progress
	// holds a slot of calls, an unprivileged inspect one of inspects too.
	calls, inspects chan struct{}

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
	// Logf logs one line (the caller's UID for every mutating call and
	// inspect, refusals); nil logs nothing. URLs in it are redacted.
	Logf func(format string, args ...any)
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
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	s := &Server{conn: conn, backend: backend, authz: o.Authorizer, classify: o.Classify, clock: o.Clock, done: make(chan struct{}),
		logf: o.Logf, calls: make(chan struct{}, MaxCalls), inspects: make(chan struct{}, MaxUnprivilegedInspects)}
	s.ctx, s.cancel = context.WithCancel(ctx)

	st := backend.Status()
	s.props = &properties{conn: conn, m: map[string]any{
		"Operation":  st.Operation,
		"Progress":   redactProgress(st.Progress),
		"LastError":  fetch.RedactText(st.LastError),
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
	s.set("LastError", fetch.RedactText(st.LastError))
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
	p := redactProgress(s.backend.Status().Progress)
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

// redactProgress strips URL secrets from the phase ("opening https://…").
func redactProgress(p Progress) Progress {
	p.Phase = fetch.RedactText(p.Phase)
	return p
}

var errTooManyCalls = dbus.NewError(ErrBusy, []any{"too many calls in progress; try again"})

// enter takes a slot of sem, or reports that none is free.
func enter(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

func leave(sem chan struct{}) { <-sem }

// mutating authorizes a mutating call, takes a call slot and logs the
// caller's UID. On success the caller must call done.
func (s *Server) mutating(sender dbus.Sender, method, detail string) (c caller, done func(), e *dbus.Error) {
	c, e = s.authz.check(s.conn, sender, method)
	if e != nil {
		s.logf("%s from %s refused: %v", method, sender, e.Body)
		return c, nil, e
	}
	if !enter(s.calls) {
		s.logf("%s from uid %d refused: too many calls in progress", method, c.uid)
		return c, nil, errTooManyCalls
	}
	s.logf("%s from uid %d%s", method, c.uid, fetch.RedactText(detail))
	return c, func() { leave(s.calls) }, nil
}

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
	return dbus.NewError(name, []any{fetch.RedactText(err.Error())})
}

// object carries the exported methods; its method table is the contract.
type object Server

func (o *object) srv() *Server { return (*Server)(o) }

// methodTable is what io.otad.Update1 exports; a test holds it to the
// contract XML.
func (o *object) methodTable() map[string]any {
	return map[string]any{
		"Install":         o.Install,
		"InstallFD":       o.InstallFD,
		"InspectBundleFD": o.InspectBundleFD,
		"Cancel":          o.Cancel,
		"Reboot":          o.Reboot,
		"MarkGood":        o.MarkGood,
		"MarkBad":         o.MarkBad,
		"MarkActive":      o.MarkActive,
		"GetSlotStatus":   o.GetSlotStatus,
		"InspectBundle":   o.InspectBundle,
		"Poll":            o.Poll, // fleet.go
	}
}

func (o *object) Install(sender dbus.Sender, source string, options map[string]dbus.Variant) (string, *dbus.Error) {
	s := o.srv()
	c, done, e := s.mutating(sender, "Install", " source "+source)
	if e != nil {
		closeFDs(fdsIn(options))
		return "", e
	}
	defer done()
	if e := checkSource(source, c, "Install"); e != nil {
		closeFDs(fdsIn(options))
		return "", e
	}
	return s.install(c, source, nil, options)
}

// InstallFD installs from a descriptor the caller opened with its own
// rights: a file the daemon might not see (PrivateTmp, ProtectHome) or
// must not open with its own rights.
func (o *object) InstallFD(sender dbus.Sender, fd dbus.UnixFD, options map[string]dbus.Variant) (string, *dbus.Error) {
	s := o.srv()
	c, done, e := s.mutating(sender, "InstallFD", "")
	if e != nil {
		closeFDs(append(fdsIn(options), fd))
		return "", e
	}
	defer done()
	f, e := acceptFD(fd, c, "bundle")
	if e != nil {
		closeFDs(fdsIn(options))
		return "", e
	}
	return s.install(c, "", f, options)
}

// install decodes the options, takes over a fallback-fd, and hands the
// call to the backend, which from then on owns every *File.
func (s *Server) install(c caller, source string, bundle *File, options map[string]dbus.Variant) (string, *dbus.Error) {
	var fallback *File
	closeAll := func() {
		for _, f := range []*File{bundle, fallback} {
			if f != nil {
				f.Close()
			}
		}
	}
	opts, err := decodeOptions(options)
	if err != nil {
		closeFDs(fdsIn(options))
		closeAll()
		return "", s.dbusErr(err)
	}
	if fd, ok := opts["fallback-fd"].(dbus.UnixFD); ok {
		delete(opts, "fallback-fd")
		if _, both := opts["fallback"]; both {
			closeFDs([]dbus.UnixFD{fd})
			closeAll()
			return "", dbus.NewError(ErrInvalidArgs, []any{"options fallback and fallback-fd exclude each other"})
		}
		var e *dbus.Error
		if fallback, e = acceptFD(fd, c, "fallback"); e != nil {
			closeAll()
			return "", e
		}
		opts[OptFallbackFile] = fallback
	}
	if fb, ok := opts["fallback"].(string); ok {
		if e := checkSource(fb, c, "Install"); e != nil {
			closeAll()
			return "", e
		}
	}
	if bundle == nil && fallback == nil {
		tx, err := s.backend.Install(s.ctx, source, opts)
		if err != nil {
			return "", s.dbusErr(err)
		}
		return tx, nil
	}
	fb, ok := s.backend.(FileBackend)
	if !ok {
		closeAll()
		return "", dbus.NewError(ErrInvalidArgs, []any{"this service does not take descriptors"})
	}
	tx, err := fb.InstallFiles(s.ctx, source, bundle, opts)
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
			return nil, fmt.Errorf("%w %q (known: reboot, skip-unchanged, fallback, fallback-fd)", ErrUnknownOption, k)
		}
		v := in[k]
		if v.Signature().String() != want {
			return nil, fmt.Errorf("%w %q: type %s, want %s", ErrUnknownOption, k, v.Signature(), want)
		}
		if s, ok := v.Value().(string); ok && s == "" {
			return nil, fmt.Errorf("%w %q: empty", ErrUnknownOption, k)
		}
		if _, ok := v.Value().(dbus.UnixFDIndex); ok {
			// "h" without a descriptor attached to the message.
			return nil, fmt.Errorf("%w %q: no descriptor passed", ErrUnknownOption, k)
		}
		out[k] = v.Value()
	}
	return out, nil
}

func (o *object) Cancel(sender dbus.Sender) *dbus.Error {
	s := o.srv()
	_, done, e := s.mutating(sender, "Cancel", "")
	if e != nil {
		return e
	}
	defer done()
	return s.dbusErr(s.backend.Cancel())
}

func (o *object) Reboot(sender dbus.Sender) *dbus.Error {
	s := o.srv()
	_, done, e := s.mutating(sender, "Reboot", "")
	if e != nil {
		return e
	}
	defer done()
	return s.dbusErr(s.backend.Reboot(s.ctx))
}

func (o *object) MarkGood(sender dbus.Sender, slot string) *dbus.Error {
	s := o.srv()
	_, done, e := s.mutating(sender, "MarkGood", " slot "+slot)
	if e != nil {
		return e
	}
	defer done()
	return s.dbusErr(s.backend.MarkGood(slot))
}

func (o *object) MarkBad(sender dbus.Sender, slot string) *dbus.Error {
	s := o.srv()
	_, done, e := s.mutating(sender, "MarkBad", " slot "+slot)
	if e != nil {
		return e
	}
	defer done()
	return s.dbusErr(s.backend.MarkBad(slot))
}

func (o *object) MarkActive(sender dbus.Sender, slot string) *dbus.Error {
	s := o.srv()
	_, done, e := s.mutating(sender, "MarkActive", " slot "+slot)
	if e != nil {
		return e
	}
	defer done()
	return s.dbusErr(s.backend.MarkActive(slot))
}

// slotEntry is the D-Bus struct (sa{sv}).
type slotEntry struct {
	Name  string
	Props map[string]dbus.Variant
}

func (o *object) GetSlotStatus() ([]slotEntry, *dbus.Error) {
	s := o.srv()
	if !enter(s.calls) {
		return nil, errTooManyCalls
	}
	defer leave(s.calls)
	slots := s.backend.Slots()
	out := make([]slotEntry, len(slots))
	for i, sl := range slots {
		out[i] = slotEntry{Name: sl.Name, Props: make(map[string]dbus.Variant, len(sl.Props))}
		for k, v := range sl.Props {
			// Readable by anyone: a source URL or an error quoting one
			// loses its userinfo and query.
			if str, ok := v.Value().(string); ok {
				v = dbus.MakeVariant(fetch.RedactText(str))
			}
			out[i].Props[k] = v
		}
	}
	return out, nil
}

// inspectTimeout bounds one inspect (download and verify the header).
const inspectTimeout = 2 * time.Minute

// enterInspect identifies the caller and takes its slots; on success the
// caller must call done.
func (s *Server) enterInspect(sender dbus.Sender, method, detail string) (c caller, done func(), e *dbus.Error) {
	c, e = s.authz.identify(s.conn, sender, method)
	if e != nil {
		return c, nil, e
	}
	if !enter(s.calls) {
		s.logf("%s from uid %d refused: too many calls in progress", method, c.uid)
		return c, nil, errTooManyCalls
	}
	if !c.privileged && !enter(s.inspects) {
		leave(s.calls)
		s.logf("%s from uid %d refused: %d unprivileged inspects already running", method, c.uid, MaxUnprivilegedInspects)
		return c, nil, errTooManyCalls
	}
	s.logf("%s from uid %d%s", method, c.uid, fetch.RedactText(detail))
	return c, func() {
		if !c.privileged {
			leave(s.inspects)
		}
		leave(s.calls)
	}, nil
}

func (o *object) InspectBundle(sender dbus.Sender, source string) (map[string]dbus.Variant, *dbus.Error) {
	s := o.srv()
	c, done, e := s.enterInspect(sender, "InspectBundle", " source "+source)
	if e != nil {
		return nil, e
	}
	defer done()
	if e := checkSource(source, c, "InspectBundle"); e != nil {
		return nil, e
	}
	ctx, cancel := context.WithTimeout(s.ctx, inspectTimeout)
	defer cancel()
	info, err := s.backend.Inspect(ctx, source)
	return s.inspectResult(c, "InspectBundle", info, err)
}

// InspectBundleFD inspects a bundle the caller opened with its own rights.
func (o *object) InspectBundleFD(sender dbus.Sender, fd dbus.UnixFD) (map[string]dbus.Variant, *dbus.Error) {
	s := o.srv()
	c, done, e := s.enterInspect(sender, "InspectBundleFD", "")
	if e != nil {
		closeFDs([]dbus.UnixFD{fd})
		return nil, e
	}
	defer done()
	f, e := acceptFD(fd, c, "bundle")
	if e != nil {
		return nil, e
	}
	fb, ok := s.backend.(FileBackend)
	if !ok {
		f.Close()
		return nil, dbus.NewError(ErrInvalidArgs, []any{"this service does not take descriptors"})
	}
	ctx, cancel := context.WithTimeout(s.ctx, inspectTimeout)
	defer cancel()
	info, err := fb.InspectFile(ctx, f)
	return s.inspectResult(c, "InspectBundleFD", info, err)
}

// inspectResult answers an inspect. A caller that is not privileged gets
// only the error's name and a fixed sentence (see publicInspectError); the
// details go to the log with its UID.
func (s *Server) inspectResult(c caller, method string, info map[string]any, err error) (map[string]dbus.Variant, *dbus.Error) {
	if err != nil {
		e := s.dbusErr(err)
		if c.privileged {
			return nil, e
		}
		s.logf("%s from uid %d failed: %v", method, c.uid, e.Body)
		return nil, dbus.NewError(e.Name, []any{publicInspectError(e.Name)})
	}
	out := make(map[string]dbus.Variant, len(info))
	for k, v := range info {
		out[k] = dbus.MakeVariant(v)
	}
	return out, nil
}
