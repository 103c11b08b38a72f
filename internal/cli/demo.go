package cli

import "context"

// cmdDemo is replaced by the real implementation in this file.
func cmdDemo(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "demo", "", "(not built yet)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	return errNotBuilt("demo")
}
