// Package bootsim applies the rules of otad's U-Boot boot script
// (yocto/meta-otad/recipes-bsp/otad-boot-script/files/boot.cmd) to a
// bootenv.Store, one power-on at a time, so the whole update loop can be
// tested without U-Boot. A test in package boot runs the script text itself
// through a small hush interpreter and checks it against Step.
package bootsim

import (
	"strconv"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/bootenv"
)

// Step is one boot: during a trial (upgrade_available=1) bootcount goes up
// by one, in hex like U-Boot's setexpr; past bootlimit (default 3, compared
// as hex like itest) the trial is over: otad_failed=otad_slot,
// otad_slot=otad_prev, upgrade_available=0, bootcount=0. A trial boot saves
// the environment once; a normal boot writes nothing. Step returns the slot
// the script boots: B if otad_slot is "B", else A.
func Step(s bootenv.Store) (slot string, err error) {
	var final *bootenv.Env
	err = bootenv.Update(s, func(e *bootenv.Env) error {
		final = e
		if up, _ := e.Get(boot.VarUpgrade); up != "1" {
			return nil
		}
		// With otad_native_bootcount=1 U-Boot's own bootcount driver counts
		// and altbootcmd falls back instead of the script: same effect.
		return count(e)
	})
	if err != nil {
		return "", err
	}
	if v, _ := final.Get(boot.VarSlot); v == "B" {
		return "B", nil
	}
	return "A", nil
}

func count(e *bootenv.Env) error {
	bc := hexVal(e, boot.VarBootCount, 0) + 1
	e.Set(boot.VarBootCount, strconv.FormatUint(bc, 16))
	if _, ok := e.Get(boot.VarBootLimit); !ok {
		e.Set(boot.VarBootLimit, strconv.Itoa(boot.DefaultBootLimit))
	}
	if bc > hexVal(e, boot.VarBootLimit, boot.DefaultBootLimit) {
		slot, _ := e.Get(boot.VarSlot)
		prev, _ := e.Get(boot.VarPrev)
		e.Set(boot.VarFailed, slot)
		e.Set(boot.VarSlot, prev)
		e.Set(boot.VarUpgrade, "0")
		e.Set(boot.VarBootCount, "0")
	}
	return nil
}

// hexVal reads a variable as U-Boot's itest and setexpr do: hexadecimal.
// Garbage reads as 0, as simple_strtoul stops at the first non-digit.
func hexVal(e *bootenv.Env, name string, def uint64) uint64 {
	v, ok := e.Get(name)
	if !ok {
		return def
	}
	var n uint64
	for i := 0; i < len(v); i++ {
		c := v[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return n
		}
		n = n*16 + d
	}
	return n
}
