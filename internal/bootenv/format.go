package bootenv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Errors callers branch on.
var (
	ErrNoValidCopy = errors.New("bootenv: no valid environment copy")
	ErrTooLarge    = errors.New("bootenv: environment larger than its area")
	ErrBadName     = errors.New("bootenv: invalid variable name or value")
	ErrReadOnly    = errors.New("bootenv: environment device is read-only")
	ErrReadBack    = errors.New("bootenv: read-back after write does not match")
	ErrShortRead   = errors.New("bootenv: short read")
)

// FlagScheme is how the flags byte of a redundant environment says which
// copy is current.
type FlagScheme int

const (
	// FlagsIncrement: the newer copy has the higher counter, 255 → 0 wraps.
	// U-Boot uses it for NAND, MMC, files, SPI; fw_setenv on files and block
	// devices writes it.
	FlagsIncrement FlagScheme = iota
	// FlagsBoolean: 1 = active, 0 = obsolete; U-Boot's redundant env in NOR
	// flash. The new copy is written active, then the old one's flag byte is
	// programmed to 0 (NOR can clear bits without an erase).
	FlagsBoolean
)

func (s FlagScheme) String() string {
	if s == FlagsBoolean {
		return "boolean"
	}
	return "increment"
}

const (
	flagActive   = 1
	flagObsolete = 0
)

// header is the size of the CRC (+ flags byte) before the data area.
func header(redundant bool) int {
	if redundant {
		return 5
	}
	return 4
}

// encode renders e into one copy of size bytes.
func encode(e *Env, size int, redundant bool, flag byte) ([]byte, error) {
	h := header(redundant)
	if size <= h+1 {
		return nil, fmt.Errorf("%w: area of %d bytes", ErrTooLarge, size)
	}
	buf := make([]byte, size)
	p := h
	for _, n := range e.Names() {
		v := e.vars[n]
		if !ValidName(n) || bytes.IndexByte([]byte(v), 0) >= 0 {
			return nil, fmt.Errorf("%w: %q", ErrBadName, n)
		}
		// name '=' value NUL, and room for the final NUL of the list.
		need := len(n) + 1 + len(v) + 1
		if p+need+1 > size {
			return nil, fmt.Errorf("%w: %d bytes available, %q does not fit", ErrTooLarge, size-h, n)
		}
		p += copy(buf[p:], n)
		buf[p] = '='
		p++
		p += copy(buf[p:], v)
		p++ // NUL
	}
	// buf[p] is already 0: the empty string ends the list.
	if redundant {
		buf[4] = flag
	}
	binary.LittleEndian.PutUint32(buf, crc32.ChecksumIEEE(buf[h:]))
	return buf, nil
}

// copyState is one decoded copy.
type copyState struct {
	valid bool // CRC matches and the data parses
	flag  byte
	env   *Env
}

// decode checks the CRC of one copy and parses its data.
func decode(buf []byte, redundant bool) copyState {
	h := header(redundant)
	var st copyState
	if len(buf) <= h {
		return st
	}
	if redundant {
		st.flag = buf[4]
	}
	if binary.LittleEndian.Uint32(buf) != crc32.ChecksumIEEE(buf[h:]) {
		return st
	}
	env, err := parseData(buf[h:])
	if err != nil {
		return st
	}
	st.valid, st.env = true, env
	return st
}

// parseData parses NUL-separated "name=value" strings up to the empty
// string. Like U-Boot and libubootenv, strings without '=' are skipped; a
// list that runs off the end of the area is malformed.
func parseData(data []byte) (*Env, error) {
	e := NewEnv()
	for p := 0; ; {
		if p >= len(data) {
			return nil, errors.New("bootenv: data area not terminated")
		}
		end := bytes.IndexByte(data[p:], 0)
		if end < 0 {
			return nil, errors.New("bootenv: data area not terminated")
		}
		if end == 0 {
			return e, nil
		}
		entry := data[p : p+end]
		p += end + 1
		eq := bytes.IndexByte(entry, '=')
		if eq <= 0 {
			continue
		}
		e.Set(string(entry[:eq]), string(entry[eq+1:]))
	}
}

// pick returns the index of the copy readers use, following U-Boot's rules
// (env_import_redund for the counter, env/flash.c for the boolean scheme).
func pick(c []copyState, scheme FlagScheme) (int, error) {
	if len(c) == 1 {
		if !c[0].valid {
			return 0, ErrNoValidCopy
		}
		return 0, nil
	}
	a, b := c[0], c[1]
	switch {
	case !a.valid && !b.valid:
		return 0, ErrNoValidCopy
	case a.valid && !b.valid:
		return 0, nil
	case !a.valid && b.valid:
		return 1, nil
	}
	if scheme == FlagsBoolean {
		switch {
		case a.flag == flagActive && b.flag == flagObsolete:
			return 0, nil
		case a.flag == flagObsolete && b.flag == flagActive:
			return 1, nil
		case a.flag == b.flag:
			return 0, nil
		case a.flag == 0xFF:
			return 0, nil
		case b.flag == 0xFF:
			return 1, nil
		}
		return 0, nil
	}
	switch {
	case a.flag == 255 && b.flag == 0:
		return 1, nil
	case b.flag == 255 && a.flag == 0:
		return 0, nil
	case b.flag > a.flag:
		return 1, nil
	}
	return 0, nil // a newer, or equal flags: U-Boot takes the first copy
}

// nextFlag is the flag for a copy written after one with flag cur.
func nextFlag(cur byte, scheme FlagScheme) byte {
	if scheme == FlagsBoolean {
		return flagActive
	}
	return cur + 1 // byte arithmetic: 255 wraps to 0
}
