package cli

import "context"

// cmdBundle is replaced by the real implementation in this file.
func cmdBundle(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle", "", "(not built yet)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	return errNotBuilt("bundle")
}
