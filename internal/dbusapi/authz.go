package dbusapi

import (
	"fmt"
	"os/user"
	"strconv"

	"github.com/godbus/dbus/v5"
)

// Authorizer decides whether a bus peer may call a mutating method. It asks
// the bus daemon for the peer's UID (the daemon took it from the socket's
// credentials, so the peer cannot lie) and then checks the UID's groups.
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

// check returns nil when sender may call method, else a NotAuthorized error.
func (a *Authorizer) check(conn *dbus.Conn, sender dbus.Sender, method string) *dbus.Error {
	var uid uint32
	err := conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid)
	if err != nil {
		return dbus.NewError(ErrNotAuthorized, []any{fmt.Sprintf("%s: cannot identify caller %s: %v", method, sender, err)})
	}
	if uid == 0 {
		return nil
	}
	group := a.Group
	if group == "" {
		group = "otad"
	}
	groupsOf := a.GroupsOf
	if groupsOf == nil {
		groupsOf = defaultGroupsOf
	}
	groups, err := groupsOf(uid)
	if err == nil {
		for _, g := range groups {
			if g == group {
				return nil
			}
		}
	}
	return dbus.NewError(ErrNotAuthorized, []any{fmt.Sprintf("%s: uid %d is neither root nor in group %q", method, uid, group)})
}

// Check is the in-process check for otad's other bus faces (the RAUC
// compatible interface, internal/raucapi), so every face authorizes
// mutating calls by the same rule. The error is named ErrNotAuthorized.
func (a *Authorizer) Check(conn *dbus.Conn, sender dbus.Sender, method string) *dbus.Error {
	return a.check(conn, sender, method)
}
