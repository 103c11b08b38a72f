package cli

import (
	"context"
	"fmt"
)

func errNotBuilt(name string) error { return fmt.Errorf("%s: not built yet", name) }

func stub(name string) func(ctx context.Context, e *Env, args []string) error {
	return func(ctx context.Context, e *Env, args []string) error {
		fs := newFlags(e, name, "", "(not built yet)")
		if err := parseFlags(e, fs, args); err != nil {
			return err
		}
		return errNotBuilt(name)
	}
}

var cmdServe = stub("serve")
