package config

import (
	"fmt"
	"strings"
	"testing"
)

// single-env: refuse by default; accept only when spelled out.
func TestSingleEnv(t *testing.T) {
	const slots = "[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n"
	c, err := Parse(strings.NewReader("[system]\ncompatible=x\n"+slots), "t")
	if err != nil || c.SingleEnv != SingleEnvRefuse {
		t.Fatalf("default single-env %q, %v; want refuse", c.SingleEnv, err)
	}
	for _, v := range []string{"accept", "refuse"} {
		c, err := Parse(strings.NewReader(fmt.Sprintf("[system]\ncompatible=x\nsingle-env=%s\n%s", v, slots)), "t")
		if err != nil || c.SingleEnv != v {
			t.Errorf("single-env=%s: got %q, %v", v, c.SingleEnv, err)
		}
	}
	for _, v := range []string{"yes", "", "Accept"} {
		if _, err := Parse(strings.NewReader(fmt.Sprintf("[system]\ncompatible=x\nsingle-env=%s\n%s", v, slots)), "t"); err == nil {
			t.Errorf("single-env=%q accepted", v)
		}
	}
}
