//go:build otad_device

package cli

import (
	"context"
	"errors"
)

// The demo simulates a whole board on the host; a device build leaves it out.
func cmdDemo(context.Context, *Env, []string) error {
	return errors.New("this otad is a device build (-tags otad_device): run the demo with the host build (make demo)")
}
