package daemon

import (
	"context"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/sdsys"
)

// Serve is all `otad serve` needs: load the config at path, wire the
// daemon, export it on the system bus (ServeSystemBus) and run until ctx
// ends (SIGTERM). sd_notify is used when systemd provides NOTIFY_SOCKET.
// serve replaces ServeSystemBus when non-nil (a private bus in tests).
func Serve(ctx context.Context, path string, log *logrus.Logger, serve func(context.Context, *Daemon) error) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	n, err := sdsys.NewNotifier()
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	if serve == nil {
		serve = ServeSystemBus
	}
	if log == nil {
		log = logrus.New()
		log.SetOutput(os.Stderr)
	}
	d, err := New(cfg, Options{Log: log, Notifier: n, Serve: serve})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
