//go:build otad_device

package cli

import (
	"context"
	"errors"
)

// A device build (-tags otad_device, what `make cross` and the Yocto
// recipe ship) leaves out the build-host tools: bundles are made and
// signed on the build host, never on the device.
var errHostTool = errors.New("this otad is a device build (-tags otad_device): create, sign and keygen run on the build host's otad")

func bundleKeygen(context.Context, *Env, []string) error { return errHostTool }
func bundleCreate(context.Context, *Env, []string) error { return errHostTool }
func bundleSign(context.Context, *Env, []string) error   { return errHostTool }
func bundlePubkey(context.Context, *Env, []string) error { return errHostTool }
func bundleDigest(context.Context, *Env, []string) error { return errHostTool }

func bundleAttachSignature(context.Context, *Env, []string) error { return errHostTool }
