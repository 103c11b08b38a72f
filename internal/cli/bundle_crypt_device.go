//go:build otad_device

package cli

import "context"

// Encrypting and re-wrapping run on the build host; a device only decrypts.
func bundleEncrypt(context.Context, *Env, []string) error    { return errHostTool }
func bundleRecipients(context.Context, *Env, []string) error { return errHostTool }
