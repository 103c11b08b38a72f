package dbusapi

import (
	"context"
	"time"

	"github.com/godbus/dbus/v5"
)

// Poll asks the daemon's fleet client to poll its server now.
func (c *Client) Poll(ctx context.Context) error {
	return remote(c.obj.CallWithContext(ctx, Interface+".Poll", 0).Err)
}

// Fleet reads the Fleet* properties.
func (c *Client) Fleet(ctx context.Context) (FleetStatus, error) {
	var all map[string]dbus.Variant
	if err := c.obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, Interface).Store(&all); err != nil {
		return FleetStatus{}, remote(err)
	}
	var st FleetStatus
	var last, next int64
	get := func(name string, dst any) {
		if v, ok := all[name]; ok {
			_ = v.Store(dst)
		}
	}
	get("FleetServer", &st.Server)
	get("FleetAction", &st.Action)
	get("FleetLastPoll", &last)
	get("FleetNextPoll", &next)
	if last > 0 {
		st.LastPoll = time.Unix(last, 0)
	}
	if next > 0 {
		st.NextPoll = time.Unix(next, 0)
	}
	return st, nil
}
