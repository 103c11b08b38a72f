// Package raucapi serves otad on RAUC's D-Bus interface: it owns the bus
// name de.pengutronix.rauc and exports de.pengutronix.rauc.Installer at
// "/", so clients written for RAUC (the rauc command line,
// rauc-hawkbit-updater, Home Assistant OS Supervisor, Edgehog's runtime)
// drive otad unchanged. It is a face beside internal/dbusapi and holds no
// update logic: the daemon hands it a Backend, the engine behind the same
// adapter io.otad.Update1 uses.
//
// Mapping. RAUC's slot names are otad's slot sections without "slot."
// ([slot.rootfs.0] name = A is rootfs.0). Operation is "installing" while
// otad downloads, verifies or writes a bundle and "idle" otherwise (RAUC
// has no other values). BootSlot is the booted slot's bootname (what the
// kernel command line names, as RAUC reports it). Completed carries 0 for
// success and 1 for any failure. GetSlotStatus uses RAUC's keys; a slot's
// RAUC "state" is booted or inactive, its "boot-status" is bad exactly when
// otad records it bad, and otad's own state travels as "otad.state".
//
// Invariants. Mutating methods (Install, InstallBundle, Mark) are
// authorized twice, like io.otad.Update1's: by the bus policy
// (systemd/de.pengutronix.rauc.conf) and here by dbusapi.Authorizer, before
// the backend sees the call. Arguments are checked before anything starts:
// ones that would weaken a check otad always makes (ignore-compatible,
// ignore-version-limit, tls-no-verify set to true), ones otad cannot honour
// (require-manifest-hash) and unknown ones are refused, so a caller never
// believes a guard is in place that is not. Per-call fetch arguments (TLS
// files, HTTP headers) are accepted only from authorized callers, even on
// InspectBundle: otherwise anyone could make otad present its client key
// to a server of their choosing. Info and InspectBundle follow
// io.otad.Update1's inspect rules: a caller that is neither root nor in
// group otad may name only an https URL (a path would be opened with the
// daemon's rights, so it is refused before anything is opened, with one
// answer whether or not the file exists), at most
// dbusapi.MaxUnprivilegedInspects of its inspects run at once across both
// faces (others are answered Busy), and its failed inspects carry only the
// error's name and a fixed sentence; the caller's UID is logged. Header values never appear in errors or
// logs (they carry tokens). Nothing here is persisted: the transaction ids
// callers pass live in memory and are lost on restart; otad's journal keeps
// its own.
package raucapi

import (
	"context"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/dbusapi"
)

// The names RAUC publishes.
const (
	BusName    = "de.pengutronix.rauc"
	ObjectPath = dbus.ObjectPath("/")
	Interface  = "de.pengutronix.rauc.Installer"
)

// RAUC's Operation values.
const (
	OpIdle       = "idle"
	OpInstalling = "installing"
)

// Slot is one otad slot and what RAUC calls it.
type Slot struct {
	Name     string // otad's name: A or B
	RaucName string // RAUC's name: rootfs.0, rootfs.1
	Class    string
	Device   string
	Type     string
	Bootname string
}

// Access is what a caller passes for fetching one bundle: RAUC's tls-cert,
// tls-key, tls-ca (file paths) and http-headers ("Name: value" each).
type Access struct {
	TLSCert, TLSKey, TLSCA string
	Headers                []string
}

// IsZero reports whether no fetch argument was given.
func (a Access) IsZero() bool {
	return a.TLSCert == "" && a.TLSKey == "" && a.TLSCA == "" && len(a.Headers) == 0
}

// Backend is the engine as this face sees it. Status, Slots and Subscribe
// are dbusapi's (the same adapter); Install and Inspect take the caller's
// fetch arguments; Primary names the otad slot the boot loader starts next.
type Backend interface {
	Install(ctx context.Context, source string, a Access) (tx string, err error)
	Inspect(ctx context.Context, source string, a Access) (map[string]any, error)
	MarkGood(slot string) error
	MarkBad(slot string) error
	MarkActive(slot string) error
	Status() dbusapi.Status
	Slots() []dbusapi.SlotStatus
	Primary() (string, error)
	Subscribe() (<-chan dbusapi.Event, func())
}

// operation maps otad's operation to RAUC's two values.
func operation(op string) string {
	switch op {
	case "downloading", "verifying", "writing":
		return OpInstalling
	}
	return OpIdle
}

// progress is RAUC's Progress property, (isi): percent, message, nesting
// depth (otad reports one level).
type progress struct {
	Percent int32
	Message string
	Depth   int32
}

func progressOf(st dbusapi.Status) progress {
	msg := st.Progress.Phase
	if msg == "" {
		msg = st.Operation
	}
	return progress{Percent: st.Progress.Percent, Message: msg, Depth: 1}
}
