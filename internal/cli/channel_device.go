//go:build otad_device

package cli

import "context"

// A device build leaves out the channel's host commands (init, add,
// rollout, pause, sign, show, stats): channels are built on the build host.
func cmdChannel(context.Context, *Env, []string) error { return errHostTool }
