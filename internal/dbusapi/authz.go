package dbusapi

import (
	"fmt"
	"os/user"
	"strconv"

	"github.com/godbus/dbus/v5"
)

// Authorizer decides whether a bus peer may call a mutating method. It asks
// the bus daemon for the peer's UID (the daemon took it from the socket's
// credentials, so the peer cannot lie) and then looks up that UID's groups
// in the user database (/etc/passwd and /etc/group) — not the groups the
// peer's process had, which the bus does not report: a group change takes
// effect at the next call, without the caller logging in again.
type Authorizer struct {
	// Group whose members may mutate; root always may. Default "otad".
	Group string
	// GroupsOf returns the group names of a UID. Default: os/user
	// (pure Go with CGO_ENABLED=0: /etc/passwd and /etc/group).
	GroupsOf func(uid uint32) ([]string, error)
}

func defaultGroupsOf(uid uint32) ([]string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(gids))
	for _, gid := range gids {
		g, err := user.LookupGroupId(gid)
		if err != nil {
			continue
		}
		names = append(names, g.Name)
	}
	return names, nil
}

// identify asks the bus for sender's UID and decides whether it is
// privileged (root or a member of the group).
func (a *Authorizer) identify(conn *dbus.Conn, sender dbus.Sender, method string) (caller, *dbus.Error) {
	var uid uint32
	err := conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid)
	if err != nil {
		return caller{}, dbus.NewError(ErrNotAuthorized, []any{fmt.Sprintf("%s: cannot identify caller %s: %v", method, sender, err)})
	}
	return caller{uid: uid, privileged: a.member(uid)}, nil
}

// check returns the caller when it may call a mutating method, else a
// NotAuthorized error.
func (a *Authorizer) check(conn *dbus.Conn, sender dbus.Sender, method string) (caller, *dbus.Error) {
	c, e := a.identify(conn, sender, method)
	if e != nil {
		return c, e
	}
	if !c.privileged {
		return c, dbus.NewError(ErrNotAuthorized, []any{fmt.Sprintf("%s: uid %d is neither root nor in group %q", method, c.uid, a.group())})
	}
	return c, nil
}

func (a *Authorizer) group() string {
	if a.Group == "" {
		return "otad"
	}
	return a.Group
}

// member reports whether uid is root or in the group.
func (a *Authorizer) member(uid uint32) bool {
	if uid == 0 {
		return true
	}
	group := a.group()
	groupsOf := a.GroupsOf
	if groupsOf == nil {
		groupsOf = defaultGroupsOf
	}
	groups, err := groupsOf(uid)
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g == group {
			return true
		}
	}
	return false
}

// Identify tells otad's other bus faces who calls: the UID the bus daemon
// vouches for and whether it is privileged (root or in the group). A face
// must not open a path, or show a backend error's text, for a caller that
// is not.
func (a *Authorizer) Identify(conn *dbus.Conn, sender dbus.Sender, method string) (uid uint32, privileged bool, e *dbus.Error) {
	c, e := a.identify(conn, sender, method)
	return c.uid, c.privileged, e
}

// Check is the in-process check for otad's other bus faces (the RAUC
// compatible interface, internal/raucapi), so every face authorizes
// mutating calls by the same rule. The error is named ErrNotAuthorized.
func (a *Authorizer) Check(conn *dbus.Conn, sender dbus.Sender, method string) *dbus.Error {
	_, e := a.check(conn, sender, method)
	return e
}
