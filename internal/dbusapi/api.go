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
// (systemd/io.otad.Update1.conf) and here, from the caller's UID as the bus
// daemon reports it and that UID's groups in /etc/group — before the
// backend sees the call; the UID is logged. Readers (properties,
// GetSlotStatus, InspectBundle) are open to anyone, but the daemon never
// opens a path with its own rights for a caller that is neither root nor
// in group otad: such callers pass a descriptor they opened (InstallFD,
// InspectBundleFD) or an https URL, at most MaxUnprivilegedInspects at a
// time, and their errors never carry the backend's text (which may quote
// file bytes). A received descriptor is accepted only if it is a regular
// file (a block device from root) and is closed on every path. At most
// MaxCalls method calls run at once; more are answered Busy. URL userinfo
// and query strings are stripped from errors, properties and slot status.
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

// InstallOptions lists the option keys Install and InstallFD accept and
// their D-Bus types.
var InstallOptions = map[string]string{
	"reboot":         "b",
	"skip-unchanged": "b",
	"fallback":       "s",
	"fallback-fd":    "h",
}

// OptFallbackFile is the option key under which a Backend receives the
// fallback-fd descriptor, as a *File, in InstallFiles.
const OptFallbackFile = "fallback-file"

// FileBackend is a Backend that also reads files callers opened with their
// own rights (InstallFD, InspectBundleFD, fallback-fd). The server hands
// it every *File it accepted; the backend owns each from the call on and
// closes it when done with it — when the install ends, or at once when the
// call fails.
type FileBackend interface {
	Backend
	// InstallFiles is Install where the bundle (when bundle is non-nil;
	// source is then empty) and/or the fallback (opts[OptFallbackFile])
	// are caller files.
	InstallFiles(ctx context.Context, source string, bundle *File, opts map[string]any) (tx string, err error)
	// InspectFile is Inspect of a caller file.
	InspectFile(ctx context.Context, f *File) (map[string]any, error)
}

// ErrUnknownOption is returned (as ErrInvalidArgs on the bus) for an
// Install option key that is not in InstallOptions.
var ErrUnknownOption = errors.New("dbusapi: unknown install option")
