package cli

import (
	"context"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/daemon"
	"github.com/otadev/otad/internal/logging"
)

func cmdServe(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "serve", "", "Run the update daemon: resume or confirm what the journal records, then\nserve io.otad.Update1 on the bus until SIGTERM. Meant to run as otad.service.")
	cfg := fs.String("config", config.DefaultPath, "system configuration file")
	bus := fs.String("bus", "", "D-Bus address to serve on (default: the system bus)")
	level := fs.String("log-level", "info", "debug, info, warning or error")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("serve takes no arguments")
	}
	lvl, err := logrus.ParseLevel(*level)
	if err != nil {
		return usagef("serve: -log-level: %v", err)
	}
	log := logging.New(e.Stderr, os.Getenv, lvl)
	return daemon.Serve(ctx, *cfg, log, daemon.ServeBus(*bus))
}
