package raucapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/fetch"
)

var errNoSuchSlot = errors.New("raucapi: no such slot")

// inspectTimeout bounds InspectBundle and Info like io.otad.Update1's
// InspectBundle: a reader must not hold a download open forever.
const inspectTimeout = 2 * time.Minute

// object carries the exported methods; methodTable is what the interface
// serves, and the introspection comparison test holds it to RAUC's list.
type object Server

func (o *object) srv() *Server { return (*Server)(o) }

func (o *object) methodTable() map[string]any {
	return map[string]any{
		"Install":           o.Install,
		"InstallBundle":     o.InstallBundle,
		"Info":              o.Info,
		"InspectBundle":     o.InspectBundle,
		"Mark":              o.Mark,
		"GetSlotStatus":     o.GetSlotStatus,
		"GetArtifactStatus": o.GetArtifactStatus,
		"GetPrimary":        o.GetPrimary,
	}
}

// Install is RAUC's deprecated form of InstallBundle without arguments.
func (o *object) Install(sender dbus.Sender, source string) *dbus.Error {
	return o.install(sender, "Install", source, nil)
}

// InstallBundle starts an install; Completed reports its end.
func (o *object) InstallBundle(sender dbus.Sender, source string, args map[string]dbus.Variant) *dbus.Error {
	return o.install(sender, "InstallBundle", source, args)
}

func (o *object) install(sender dbus.Sender, method, source string, args map[string]dbus.Variant) *dbus.Error {
	s := o.srv()
	if e := s.o.Authorizer.Check(s.conn, sender, method); e != nil {
		return e
	}
	a, err := parseArgs(args, true)
	if err != nil {
		return s.dbusErr(err)
	}
	// Held across the start so a fast install's Completed (handled under
	// the same lock) finds its transaction-id recorded.
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.b.Install(s.ctx, source, a.access)
	if err != nil {
		return s.dbusErr(err)
	}
	if a.txID != "" {
		s.txIDs[tx] = a.txID
		s.o.Logf("rauc transaction %s is otad transaction %s", a.txID, tx)
	}
	return nil
}

// Info is RAUC's deprecated bundle query: compatible and version.
func (o *object) Info(sender dbus.Sender, source string) (string, string, *dbus.Error) {
	s := o.srv()
	privileged, uid, done, e := s.enterInspect(sender, "Info", source)
	if e != nil {
		return "", "", e
	}
	defer done()
	ctx, cancel := context.WithTimeout(s.ctx, inspectTimeout)
	defer cancel()
	m, err := s.b.Inspect(ctx, source, Access{})
	if err != nil {
		return "", "", s.inspectErr(privileged, uid, "Info", err)
	}
	c, _ := m["compatible"].(string)
	v, _ := m["version"].(string)
	return c, v, nil
}

// InspectBundle verifies a bundle and returns its manifest in RAUC's
// nested layout (update, bundle, images), with otad's extra facts under
// keys RAUC does not use.
func (o *object) InspectBundle(sender dbus.Sender, source string, args map[string]dbus.Variant) (map[string]dbus.Variant, *dbus.Error) {
	s := o.srv()
	a, err := parseArgs(args, false)
	if err != nil {
		return nil, s.dbusErr(err)
	}
	privileged, uid, done, e := s.enterInspect(sender, "InspectBundle", source)
	if e != nil {
		return nil, e
	}
	defer done()
	if !a.access.IsZero() && !privileged {
		// Fetch arguments make otad present files only it can read.
		s.o.Logf("InspectBundle from uid %d refused: fetch arguments", uid)
		return nil, dbus.NewError(dbusapi.ErrNotAuthorized, []any{fmt.Sprintf("InspectBundle: uid %d is neither root nor in group %q; fetch arguments are refused", uid, s.group())})
	}
	ctx, cancel := context.WithTimeout(s.ctx, inspectTimeout)
	defer cancel()
	m, err := s.b.Inspect(ctx, source, a.access)
	if err != nil {
		return nil, s.inspectErr(privileged, uid, "InspectBundle", err)
	}
	return inspectDict(m), nil
}

// enterInspect identifies an Info or InspectBundle caller, vets its source
// and takes its slots of the shared limiter; on success the caller must
// call done. A caller that is neither root nor in the group may name only
// an https URL: a path would be opened with the daemon's rights, so it is
// refused before anything is opened, with one answer whether or not the
// file exists. Privileged callers keep paths; fetch opens them
// O_NONBLOCK|O_NOFOLLOW and refuses anything but a regular file.
func (s *Server) enterInspect(sender dbus.Sender, method, source string) (privileged bool, uid uint32, done func(), e *dbus.Error) {
	uid, privileged, e = s.o.Authorizer.Identify(s.conn, sender, method)
	if e != nil {
		s.o.Logf("%s from %s refused: %v", method, sender, e.Body)
		return false, uid, nil, e
	}
	if !privileged && !strings.HasPrefix(strings.ToLower(source), "https://") {
		s.o.Logf("%s from uid %d refused: a local path or non-https source", method, uid)
		return false, uid, nil, dbus.NewError(dbusapi.ErrNotAuthorized, []any{fmt.Sprintf("%s: uid %d is neither root nor in group %q and may name only an https URL", method, uid, s.group())})
	}
	done, ok := s.o.Limiter.EnterInspect(privileged)
	if !ok {
		s.o.Logf("%s from uid %d refused: too many inspects in progress", method, uid)
		return privileged, uid, nil, dbus.NewError(dbusapi.ErrBusy, []any{"too many calls in progress; try again"})
	}
	s.o.Logf("%s from uid %d source %s", method, uid, fetch.RedactText(source))
	return privileged, uid, done, nil
}

// inspectErr answers a failed inspect. A caller that is not privileged gets
// the error's name and a fixed sentence (dbusapi.PublicInspectError); the
// backend's text, which may quote a file's bytes or a server's answer,
// goes only to the log with the caller's UID.
func (s *Server) inspectErr(privileged bool, uid uint32, method string, err error) *dbus.Error {
	e := s.dbusErr(err)
	if privileged {
		return e
	}
	s.o.Logf("%s from uid %d failed: %v", method, uid, e.Body)
	return dbus.NewError(e.Name, []any{dbusapi.PublicInspectError(e.Name)})
}

func (s *Server) group() string {
	if s.o.Authorizer.Group == "" {
		return "otad"
	}
	return s.o.Authorizer.Group
}

// inspectDict arranges the backend's flat manifest (compatible, version,
// security-version, created, expires, class, size, sha256, encoding) the
// way RAUC's InspectBundle nests it.
func inspectDict(m map[string]any) map[string]dbus.Variant {
	update := map[string]dbus.Variant{}
	for _, k := range []string{"compatible", "version"} {
		if v, ok := m[k].(string); ok {
			update[k] = dbus.MakeVariant(v)
		}
	}
	image := map[string]dbus.Variant{}
	if v, ok := m["class"].(string); ok {
		image["slot-class"] = dbus.MakeVariant(v)
	}
	if v, ok := m["sha256"].(string); ok {
		image["checksum"] = dbus.MakeVariant(v)
	}
	if v, ok := sizeOf(m["size"]); ok {
		image["size"] = dbus.MakeVariant(v)
	}
	if v, ok := m["encoding"].(string); ok {
		image["otad.encoding"] = dbus.MakeVariant(v)
	}
	out := map[string]dbus.Variant{
		"update": dbus.MakeVariant(update),
		"bundle": dbus.MakeVariant(map[string]dbus.Variant{"format": dbus.MakeVariant("otad")}),
		"images": dbus.MakeVariant([]map[string]dbus.Variant{image}),
	}
	for _, k := range []string{"security-version", "created", "expires", "images"} {
		if v, ok := m[k]; ok {
			out["otad."+k] = dbus.MakeVariant(v)
		}
	}
	return out
}

// sizeOf reads a size as RAUC's t (uint64).
func sizeOf(v any) (uint64, bool) {
	switch n := v.(type) {
	case int64:
		if n >= 0 {
			return uint64(n), true
		}
	case uint64:
		return n, true
	case int:
		if n >= 0 {
			return uint64(n), true
		}
	}
	return 0, false
}

// Mark marks a slot good, bad or active. The identifier is "booted",
// "other" or a RAUC slot name; the answer names the slot and what was done.
func (o *object) Mark(sender dbus.Sender, state, ident string) (string, string, *dbus.Error) {
	s := o.srv()
	if e := s.o.Authorizer.Check(s.conn, sender, "Mark"); e != nil {
		return "", "", e
	}
	sl, err := s.resolve(ident)
	if err != nil {
		return "", "", s.dbusErr(err)
	}
	switch state {
	case "good":
		err = s.b.MarkGood(sl.Name)
	case "bad":
		err = s.b.MarkBad(sl.Name)
	case "active":
		err = s.b.MarkActive(sl.Name)
	default:
		return "", "", s.dbusErr(fmt.Errorf("%w: state %q (want good, bad or active)", ErrInvalidArgs, clip(state)))
	}
	if err != nil && state == "good" && s.b.Status().Operation == "confirming" {
		// RAUC clients mark the booted slot good after a boot; on otad the
		// health check owns that decision during the trial.
		err = fmt.Errorf("%w (otad's health check is confirming the trial boot and commits the slot itself)", err)
	}
	if err != nil {
		return "", "", s.dbusErr(err)
	}
	// Operation follows through the engine's event stream (the pump).
	return sl.RaucName, fmt.Sprintf("marked slot %s as %s", sl.RaucName, state), nil
}

// resolve turns RAUC's slot identifier into an otad slot.
func (s *Server) resolve(ident string) (*Slot, error) {
	booted := s.b.Status().BootSlot
	var sl *Slot
	switch ident {
	case "booted":
		sl = s.slot(booted)
	case "other":
		sl = s.other(booted)
	default:
		for i := range s.o.Slots {
			if s.o.Slots[i].RaucName == ident {
				sl = &s.o.Slots[i]
			}
		}
	}
	if sl == nil {
		return nil, fmt.Errorf("%w: %q (want booted, other, %s or %s)", errNoSuchSlot, clip(ident), s.o.Slots[0].RaucName, s.o.Slots[1].RaucName)
	}
	return sl, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// slotEntry is one (sa{sv}) of GetSlotStatus.
type slotEntry struct {
	Name  string
	Props map[string]dbus.Variant
}

// GetSlotStatus lists both slots with RAUC's keys.
func (o *object) GetSlotStatus() ([]slotEntry, *dbus.Error) {
	s := o.srv()
	st := s.b.Status()
	byName := map[string]map[string]dbus.Variant{}
	for _, ss := range s.b.Slots() {
		byName[ss.Name] = ss.Props
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]slotEntry, 0, len(s.o.Slots))
	for _, sl := range s.o.Slots {
		out = append(out, slotEntry{Name: sl.RaucName,
			Props: slotDict(sl, byName[sl.Name], st.BootSlot, st.Compatible, s.installedTx[sl.Name])})
	}
	return out, nil
}

// slotDict maps otad's slot properties (state, device, version, sha256,
// installed, activated, reason) onto RAUC's slot status keys.
func slotDict(sl Slot, p map[string]dbus.Variant, booted, compatible, txID string) map[string]dbus.Variant {
	str := func(k string) string {
		if v, ok := p[k]; ok {
			if s, ok := v.Value().(string); ok {
				return s
			}
		}
		return ""
	}
	d := map[string]dbus.Variant{
		"class":    dbus.MakeVariant(sl.Class),
		"device":   dbus.MakeVariant(sl.Device),
		"type":     dbus.MakeVariant(sl.Type),
		"bootname": dbus.MakeVariant(sl.Bootname),
	}
	state := "inactive"
	if sl.Name == booted {
		state = "booted"
	}
	d["state"] = dbus.MakeVariant(state)
	otadState := str("state")
	boot := "good"
	if otadState == "bad" {
		boot = "bad"
	}
	d["boot-status"] = dbus.MakeVariant(boot)
	if otadState != "" {
		d["otad.state"] = dbus.MakeVariant(otadState)
	}
	if r := str("reason"); r != "" {
		d["otad.reason"] = dbus.MakeVariant(r)
	}
	if v := str("version"); v != "" {
		// otad installs only bundles whose compatible is the system's.
		d["bundle.compatible"] = dbus.MakeVariant(compatible)
		d["bundle.version"] = dbus.MakeVariant(v)
	}
	if h := str("sha256"); h != "" {
		d["sha256"] = dbus.MakeVariant(h)
		status := "ok"
		if otadState == "bad" {
			status = "failed"
		}
		d["status"] = dbus.MakeVariant(status)
	}
	if t := str("installed"); t != "" {
		d["installed.timestamp"] = dbus.MakeVariant(t)
	}
	if t := str("activated"); t != "" {
		d["activated.timestamp"] = dbus.MakeVariant(t)
	}
	if txID != "" {
		d["installed.transaction"] = dbus.MakeVariant(txID)
	}
	return d
}

// GetArtifactStatus answers RAUC's artifact repositories query: otad has
// none, so the list is empty.
func (o *object) GetArtifactStatus() ([]map[string]dbus.Variant, *dbus.Error) {
	return []map[string]dbus.Variant{}, nil
}

// GetPrimary names the slot the boot loader starts next.
func (o *object) GetPrimary() (string, *dbus.Error) {
	s := o.srv()
	name, err := s.b.Primary()
	if err != nil {
		return "", s.dbusErr(err)
	}
	sl := s.slot(name)
	if sl == nil {
		return "", s.dbusErr(fmt.Errorf("%w: boot loader names %q", errNoSuchSlot, clip(name)))
	}
	return sl.RaucName, nil
}
