package config

import (
	"errors"
	"strings"
	"testing"
)

const minimal = "[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n"

func TestCompatRaucDBus(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal), "t")
	if err != nil || c.Compat.RaucDBus {
		t.Fatalf("default: rauc-dbus %v, err %v (want off)", c != nil && c.Compat.RaucDBus, err)
	}
	c, err = Parse(strings.NewReader(minimal+"[compat]\nrauc-dbus = yes\n"), "t")
	if err != nil || !c.Compat.RaucDBus {
		t.Fatalf("rauc-dbus = yes: %+v, %v", c, err)
	}
	for in, line := range map[string]int{
		"[compat]\nrauc-dbus = maybe\n":              2,
		"[compat]\nrauc = yes\n":                     2,
		"[compat]\nrauc-dbus = no\nrauc-dbus = no\n": 3,
	} {
		_, err := Parse(strings.NewReader(in+minimal), "t")
		var ce *Error
		if !errors.As(err, &ce) || ce.Line != line {
			t.Errorf("%q: %v, want an error at line %d", in, err, line)
		}
	}
}
