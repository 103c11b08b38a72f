package dbusapi

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/fetch"
)

// Limits on concurrent method calls. A call beyond them is answered Busy
// at once rather than queued, so a flood costs the daemon a goroutine per
// message for microseconds, not a thread or a descriptor.
const (
	// MaxCalls bounds io.otad.Update1 method calls in progress, all
	// callers together.
	MaxCalls = 16
	// MaxUnprivilegedInspects bounds InspectBundle/InspectBundleFD calls
	// from callers that are neither root nor in the otad group.
	MaxUnprivilegedInspects = 2
)

// caller is a bus peer as the bus daemon vouches for it.
type caller struct {
	uid uint32
	// privileged: root or a member of the Authorizer's group (from
	// /etc/group, see Authorizer).
	privileged bool
}

// File is a descriptor a caller passed over the bus (InstallFD,
// InspectBundleFD, the fallback-fd option), opened with the caller's own
// rights and checked by the server: a regular file or, from root, a block
// device (BlockOK). Whoever is handed a *File owns it and must Close it.
type File struct {
	*os.File
	BlockOK bool
}

// acceptFD turns a received descriptor into a *File after checking its
// type; on refusal the descriptor is closed.
func acceptFD(fd dbus.UnixFD, c caller, what string) (*File, *dbus.Error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd), &st); err != nil {
		syscall.Close(int(fd))
		return nil, dbus.NewError(ErrInvalidArgs, []any{fmt.Sprintf("%s: not a usable descriptor: %v", what, err)})
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return &File{File: os.NewFile(uintptr(fd), what)}, nil
	case syscall.S_IFBLK:
		if c.uid == 0 {
			return &File{File: os.NewFile(uintptr(fd), what), BlockOK: true}, nil
		}
	}
	syscall.Close(int(fd))
	return nil, dbus.NewError(ErrInvalidArgs, []any{what + ": not a regular file (a block device only from root)"})
}

// fdsIn collects the descriptors in received values (top level and inside
// variants, arrays and maps), so that none is left open on any path.
func fdsIn(vs ...any) []dbus.UnixFD {
	var out []dbus.UnixFD
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case dbus.UnixFD:
			out = append(out, x)
		case []dbus.UnixFD:
			out = append(out, x...)
		case dbus.Variant:
			walk(x.Value())
		case map[string]dbus.Variant:
			for _, e := range x {
				walk(e.Value())
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case []dbus.Variant:
			for _, e := range x {
				walk(e.Value())
			}
		}
	}
	for _, v := range vs {
		walk(v)
	}
	return out
}

func closeFDs(fds []dbus.UnixFD) {
	for _, fd := range fds {
		syscall.Close(int(fd))
	}
}

// fdMethods are the calls whose descriptors the handlers take over; every
// other incoming message's descriptors are closed on arrival.
var fdMethods = map[string]string{"InstallFD": "ha{sv}", "InspectBundleFD": "h", "Install": "sa{sv}"}

// CloseStrayFDs is an incoming-message interceptor (dbus.WithIncomingInterceptor)
// for the daemon's connection: it closes descriptors that arrive in any
// message no handler takes them from (a signal, an unknown method, a
// wrong signature), which godbus would otherwise keep open forever.
// Descriptors attached to a message but not referenced in its body are
// invisible to it (godbus drops them); the unit's LimitNOFILE bounds those.
func CloseStrayFDs(msg *dbus.Message) {
	if _, ok := msg.Headers[dbus.FieldUnixFDs]; !ok {
		return
	}
	fds := fdsIn(msg.Body...)
	if len(fds) == 0 {
		return
	}
	if msg.Type == dbus.TypeMethodCall {
		iface, _ := msg.Headers[dbus.FieldInterface].Value().(string)
		member, _ := msg.Headers[dbus.FieldMember].Value().(string)
		path, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
		var sig dbus.Signature
		if v, ok := msg.Headers[dbus.FieldSignature]; ok {
			sig, _ = v.Value().(dbus.Signature)
		}
		if want, ok := fdMethods[member]; ok && iface == Interface && path == ObjectPath && sig.String() == want {
			return
		}
	}
	closeFDs(fds)
}

// checkSource vets a source string: an http(s) URL, or for privileged
// callers an absolute path or file:// URL (opened by fetch with
// O_NOFOLLOW|O_NONBLOCK and refused unless a regular file). Others get
// https only: a path would be opened with the daemon's rights.
func checkSource(src string, c caller, what string) *dbus.Error {
	lower := strings.ToLower(src)
	switch {
	case strings.HasPrefix(lower, "https://"):
		return nil
	case !c.privileged:
		return dbus.NewError(ErrNotAuthorized, []any{fmt.Sprintf("%s: uid %d may name only an https URL; pass a local file as a descriptor (%sFD)", what, c.uid, what)})
	case strings.HasPrefix(lower, "http://"), strings.HasPrefix(lower, "file:///"), strings.HasPrefix(src, "/"):
		return nil
	}
	return dbus.NewError(ErrInvalidArgs, []any{fmt.Sprintf("%s: source %q: want an absolute path or an http(s) URL", what, fetch.RedactURL(src))})
}

// publicInspectError is what an unprivileged caller learns of a failed
// inspect: the error's name and a fixed sentence, never the backend's
// text, which may quote bytes of the file or a server's answer.
func publicInspectError(name string) string {
	switch name {
	case ErrBadSignature:
		return "the bundle's signatures do not verify against the trusted keys"
	case ErrIncompatible:
		return "the bundle is not for this device"
	case ErrDowngrade:
		return "the bundle is older than the anti-rollback floor allows"
	case ErrBusy:
		return "busy"
	case ErrCanceled:
		return "canceled"
	}
	return "the source could not be read or is not a valid bundle (the daemon's log has the details)"
}
