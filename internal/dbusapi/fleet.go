package dbusapi

import (
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/fetch"
)

// Fleet is implemented by a Backend that runs a fleet client (hawkBit).
// The server exports the Poll method and the Fleet* properties from it; a
// Backend without one shows empty properties and Poll fails.
type Fleet interface {
	// PollNow makes the fleet client poll its server at once.
	PollNow() error
	// FleetStatus is the fleet client's state.
	FleetStatus() FleetStatus
}

// FleetStatus is what the Fleet* properties show.
type FleetStatus struct {
	Server   string    // server base URL ("" no fleet client)
	LastPoll time.Time // last successful poll (zero: none yet)
	NextPoll time.Time // when the next poll is due
	// Action is the current server action: "ID PHASE" ("" none).
	Action string
}

// fleetProps are the Fleet* properties' values; times as Unix seconds,
// 0 for never.
func fleetProps(b Backend) map[string]any {
	var st FleetStatus
	if f, ok := b.(Fleet); ok {
		st = f.FleetStatus()
	}
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.Unix()
	}
	return map[string]any{
		"FleetServer":   fetch.RedactURL(st.Server),
		"FleetLastPoll": unix(st.LastPoll),
		"FleetNextPoll": unix(st.NextPoll),
		"FleetAction":   st.Action,
	}
}

// publishFleet refreshes the Fleet* properties (PropertiesChanged for
// what moved); the pump calls it with the other status properties.
func (s *Server) publishFleet() {
	for k, v := range fleetProps(s.backend) {
		s.set(k, v)
	}
}

// Poll asks the fleet client to poll its server now (otactl poll). Root
// and group otad, like every method that makes the device act.
func (o *object) Poll(sender dbus.Sender) *dbus.Error {
	s := o.srv()
	if e := s.authz.Check(s.conn, sender, "Poll"); e != nil {
		return e
	}
	f, ok := s.backend.(Fleet)
	if !ok || f.FleetStatus().Server == "" {
		return dbus.NewError(ErrFailed, []any{"no fleet client configured ([hawkbit] server)"})
	}
	if err := f.PollNow(); err != nil {
		return s.dbusErr(err)
	}
	s.publishFleet()
	return nil
}
