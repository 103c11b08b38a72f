// Package dbusapi exports otad on the system bus as io.otad.Update1 and is
// the client the CLI uses to talk to it.
//
// The contract is io.otad.Update1.xml (docs/ links to it): the server serves
// that XML as its introspection and a test proves that the exported method
// table holds exactly those methods with those signatures. Nothing here
// calls conn.Export (reflect.Value.Method would defeat the linker's dead
// method elimination for the whole binary); see props.go.
//
// Invariants: every mutating method is authorized twice — by the bus policy
// (systemd/io.otad.Update1.conf) and here, from the caller's UID and groups
// as the bus daemon reports them — before the backend sees the call.
// Readers (properties, GetSlotStatus, InspectBundle) are open to anyone.
// Property changes are published from the backend's event stream; progress
// is coalesced to at most one PropertiesChanged per percent step or per
// second, whichever comes first, so a fast install does not flood the bus.
package dbusapi

import (
	"context"
	_ "embed"
	"errors"

	"github.com/godbus/dbus/v5"
)

const (
	BusName    = "io.otad.Update1"
	ObjectPath = dbus.ObjectPath("/io/otad/Update1")
	Interface  = "io.otad.Update1"
	// ErrorPrefix names every error the service returns: ErrorPrefix+"Busy", …
	ErrorPrefix = Interface + ".Error."
)

//go:embed io.otad.Update1.xml
var contractXML string

// Error names a client can branch on.
const (
	ErrBusy          = ErrorPrefix + "Busy"
	ErrBadSignature  = ErrorPrefix + "BadSignature"
	ErrIncompatible  = ErrorPrefix + "Incompatible"
	ErrDowngrade     = ErrorPrefix + "Downgrade"
	ErrNotAuthorized = ErrorPrefix + "NotAuthorized"
	ErrInvalidArgs   = ErrorPrefix + "InvalidArguments"
	ErrNoSuchSlot    = ErrorPrefix + "NoSuchSlot"
	ErrCanceled      = ErrorPrefix + "Canceled"
	ErrFailed        = ErrorPrefix + "Failed"
)

// Progress is the Progress property: (percent, bytes done, bytes total, phase).
type Progress struct {
	Percent int32
	Done    int64
	Total   int64
	Phase   string
}

// Status is the backend's state as the properties show it.
type Status struct {
	Operation  string
	Progress   Progress
	LastError  string
	BootSlot   string
	Compatible string
	Version    string
	TrialBoot  bool
}

// SlotStatus is one element of GetSlotStatus: a slot name and its
// properties (state, device, version, sha256, installed, activated, …).
type SlotStatus struct {
	Name  string
	Props map[string]dbus.Variant
}

// Event is what the backend reports; the server turns it into property
// changes and signals.
type Event struct {
	Kind    string // "status" (re-read Status), "progress", "completed", "rolledback"
	Tx      string
	Result  int32 // Completed: 0 success, non-zero failure
	Message string
	Slot    string
	Reason  string
	// Operation, on "status" events, is the operation this change entered.
	// It is published before the current Status so that a phase shorter
	// than the server's reaction still shows on the bus, in order.
	Operation string
}

// Backend is the engine as the bus sees it. The daemon adapts
// internal/update's Engine to it.
type Backend interface {
	Install(ctx context.Context, source string, opts map[string]any) (tx string, err error)
	Cancel() error
	Reboot(ctx context.Context) error
	MarkGood(slot string) error
	MarkBad(slot string) error
	MarkActive(slot string) error
	Inspect(ctx context.Context, source string) (map[string]any, error)
	Status() Status
	Slots() []SlotStatus
	Subscribe() (<-chan Event, func())
}

// InstallOptions lists the option keys Install accepts and their D-Bus types.
var InstallOptions = map[string]string{
	"reboot":         "b",
	"skip-unchanged": "b",
	"fallback":       "s",
}

// ErrUnknownOption is returned (as ErrInvalidArgs on the bus) for an
// Install option key that is not in InstallOptions.
var ErrUnknownOption = errors.New("dbusapi: unknown install option")
