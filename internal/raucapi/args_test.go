package raucapi

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

func v(x any) dbus.Variant { return dbus.MakeVariant(x) }

func TestArgsAccepted(t *testing.T) {
	in := map[string]dbus.Variant{
		// What rauc 1.8's client sends on every install.
		"ignore-compatible":    v(false),
		"ignore-version-limit": v(false),
		"tls-no-verify":        v(false),
		"tls-cert":             v("/etc/otad/client.pem"),
		"tls-key":              v("/etc/otad/client.key"),
		"tls-ca":               v("/etc/otad/ca.pem"),
		"http-headers":         v([]string{"Authorization: TargetToken abc", "X-Id: 7"}),
		"transaction-id":       v("dad3289a-7de1-4ad2-931e-fb827edc6496"),
	}
	got, err := parseArgs(in, true)
	if err != nil {
		t.Fatal(err)
	}
	want := callArgs{access: Access{TLSCert: "/etc/otad/client.pem", TLSKey: "/etc/otad/client.key", TLSCA: "/etc/otad/ca.pem",
		Headers: []string{"Authorization: TargetToken abc", "X-Id: 7"}}, txID: "dad3289a-7de1-4ad2-931e-fb827edc6496"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if a, err := parseArgs(nil, true); err != nil || !a.access.IsZero() || a.txID != "" {
		t.Fatalf("no args: %+v %v", a, err)
	}
}

func TestArgsRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		in      map[string]dbus.Variant
		install bool
		want    error
		says    string
	}{
		{"ignore-compatible", map[string]dbus.Variant{"ignore-compatible": v(true)}, true, ErrRefused, "compatible"},
		{"ignore-version-limit", map[string]dbus.Variant{"ignore-version-limit": v(true)}, true, ErrRefused, "anti-rollback"},
		{"tls-no-verify", map[string]dbus.Variant{"tls-no-verify": v(true)}, false, ErrRefused, "certificate"},
		{"require-manifest-hash", map[string]dbus.Variant{"require-manifest-hash": v("ab")}, true, ErrRefused, "manifest hash"},
		{"pkcs11", map[string]dbus.Variant{"tls-key": v("pkcs11:token=x")}, true, ErrRefused, "PKCS#11"},
		{"unknown", map[string]dbus.Variant{"handler-args": v("x")}, true, ErrInvalidArgs, `unsupported key "handler-args"`},
		{"install-only on inspect", map[string]dbus.Variant{"transaction-id": v("x")}, false, ErrInvalidArgs, "unsupported"},
		{"wrong type", map[string]dbus.Variant{"ignore-compatible": v("yes")}, true, ErrInvalidArgs, "want b"},
		{"headers type", map[string]dbus.Variant{"http-headers": v("A: b")}, true, ErrInvalidArgs, "want as"},
		{"relative path", map[string]dbus.Variant{"tls-ca": v("ca.pem")}, true, ErrInvalidArgs, "absolute"},
		{"empty tx", map[string]dbus.Variant{"transaction-id": v("")}, true, ErrInvalidArgs, "transaction-id"},
		{"tx with space", map[string]dbus.Variant{"transaction-id": v("a b")}, true, ErrInvalidArgs, "transaction-id"},
		{"long tx", map[string]dbus.Variant{"transaction-id": v(strings.Repeat("a", maxTxID+1))}, true, ErrInvalidArgs, "transaction-id"},
	} {
		_, err := parseArgs(c.in, c.install)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
}

// A malformed header is refused without echoing it: it may hold a token.
func TestArgsHeaderErrorsKeepSecrets(t *testing.T) {
	for _, h := range []string{"Bearer secret-token-1", "Authorization: secret-token-1\r\nX: y", "Bad Name: secret-token-1"} {
		_, err := parseArgs(map[string]dbus.Variant{"http-headers": v([]string{"Ok: 1", h})}, true)
		if !errors.Is(err, ErrInvalidArgs) || !strings.Contains(err.Error(), "http-headers[1]") {
			t.Errorf("%q: %v", h, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret-token-1") {
			t.Errorf("%q: error shows the value: %v", h, err)
		}
	}
}

func TestOperationMapping(t *testing.T) {
	for op, want := range map[string]string{
		"idle": OpIdle, "downloading": OpInstalling, "verifying": OpInstalling, "writing": OpInstalling,
		"pending-reboot": OpIdle, "confirming": OpIdle, "rolling-back": OpIdle, "": OpIdle,
	} {
		if got := operation(op); got != want {
			t.Errorf("%q → %q, want %q", op, got, want)
		}
	}
}
