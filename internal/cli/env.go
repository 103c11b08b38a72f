package cli

import "context"

// cmdEnv is replaced by the real implementation in this file.
func cmdEnv(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "env", "", "(not built yet)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	return errNotBuilt("env")
}
