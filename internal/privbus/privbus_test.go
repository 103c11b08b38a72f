package privbus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"
)

// The bus denies by default: a name nobody's policy allows cannot be owned,
// a method call to a peer is refused; the included policy opens exactly
// what it says.
func TestSystemLikePolicy(t *testing.T) {
	dir := t.TempDir()
	extra := `<policy user="root"><allow own="org.example.Allowed"/></policy>`
	b, err := Start(context.Background(), dir, extra)
	if err != nil {
		t.Fatal(err)
	}
	pid := b.PID()
	defer func() {
		b.Stop()
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("dbus-daemon %d still running after Stop", pid)
		}
	}()
	if !strings.HasPrefix(b.Address, "unix:path="+filepath.Join(dir, "bus.sock")) {
		t.Fatalf("address %q", b.Address)
	}
	conn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r, err := conn.RequestName("org.example.Allowed", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own allowed name: %v %v", r, err)
	}
	if _, err := conn.RequestName("org.example.Other", dbus.NameFlagDoNotQueue); err == nil {
		t.Fatal("owned a name no policy allows: the bus is not deny-by-default")
	}
	other, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	err = other.Object("org.example.Allowed", "/").Call("org.example.Iface.Method", 0).Err
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.AccessDenied" {
		t.Fatalf("method call without a policy allowing it: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bus.conf")); err != nil {
		t.Fatal(err)
	}
}
