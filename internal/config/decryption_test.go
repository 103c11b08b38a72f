package config

import (
	"strings"
	"testing"
)

func TestKeyringDecryptionKey(t *testing.T) {
	const base = "[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n"
	c, err := Parse(strings.NewReader(base), "t")
	if err != nil {
		t.Fatal(err)
	}
	if c.Keyring.DecryptionKey != "" {
		t.Fatalf("default decryption-key %q, want none", c.Keyring.DecryptionKey)
	}
	c, err = Parse(strings.NewReader(base+"[keyring]\ndecryption-key = /etc/otad/device.key\n"), "t")
	if err != nil || c.Keyring.DecryptionKey != "/etc/otad/device.key" {
		t.Fatalf("decryption-key: %q, %v", c.Keyring.DecryptionKey, err)
	}
	if _, err := Parse(strings.NewReader(base+"[keyring]\ndecryption-key = device.key\n"), "t"); err == nil {
		t.Fatal("relative decryption-key accepted")
	}
}
