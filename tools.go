//go:build tools

// This file pins dependencies that packages are about to use, so that
// concurrent work never has to edit go.mod. It is never built.
package tools

import (
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/coreos/go-systemd/v22/dbus"
	_ "github.com/godbus/dbus/v5"
	_ "github.com/godbus/dbus/v5/introspect"
	_ "github.com/godbus/dbus/v5/prop"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/sirupsen/logrus"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
