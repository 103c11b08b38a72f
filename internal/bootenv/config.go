package bootenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// DefaultConfigPath is where fw_printenv and fw_setenv look.
const DefaultConfigPath = "/etc/fw_env.config"

// DefaultLockPath is the lock file libubootenv and u-boot-tools take.
const DefaultLockPath = "/var/lock/fw_printenv.lock"

// ErrConfig is a malformed fw_env.config.
var ErrConfig = errors.New("bootenv: bad fw_env.config")

// Device is one line of fw_env.config: one copy of the environment.
type Device struct {
	Path        string
	Offset      int64 // negative: from the end of a block device or file
	EnvSize     int64
	SectorSize  int64 // 0: not given (MTD: erase size; others: EnvSize)
	SectorCount int64 // 0: not given
}

// Config is an fw_env.config: one device line = single copy, two lines =
// redundant. The remaining fields are not in the file; they let tests and
// special boards redirect side paths.
type Config struct {
	Devices []Device
	// LockPath defaults to DefaultLockPath; "-" disables locking. If its
	// directory does not exist or is read-only, the store runs unlocked,
	// as libubootenv does.
	LockPath string
	// SysfsRoot defaults to "/sys" (for force_ro of eMMC boot partitions).
	SysfsRoot string
	// AcceptSingleCopy: DeviceStore.ArmRisk accepts a single-copy
	// environment on FAT (otad's [system] single-env = accept).
	AcceptSingleCopy bool
}

// Redundant reports whether the config names two copies.
func (c *Config) Redundant() bool { return len(c.Devices) == 2 }

// LoadConfig reads an fw_env.config file.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bootenv: open config: %w", err)
	}
	defer f.Close()
	c, err := ParseConfig(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses fw_env.config as libubootenv and u-boot-tools do: a
// line whose first byte is '#' is a comment; the fields are read like
// sscanf("%s %lli %lx %lx %lx"): the offset is C integer syntax (0x hex, 0
// octal, decimal, may be negative), the sizes are ALWAYS hexadecimal, with
// or without 0x ("4000" is 16 KiB). A line with fewer than three fields is
// ignored; parsing stops after the second device. A zero size, a second copy
// of another size, or no device at all is an error.
func ParseConfig(r io.Reader) (*Config, error) {
	c := &Config{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	lineNo := 0
	for sc.Scan() && len(c.Devices) < 2 {
		lineNo++
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		d, n := scanDevice(line)
		if n < 3 {
			continue
		}
		if d.EnvSize == 0 {
			return nil, fmt.Errorf("%w: line %d: environment size is 0", ErrConfig, lineNo)
		}
		if len(c.Devices) == 1 && d.EnvSize != c.Devices[0].EnvSize {
			return nil, fmt.Errorf("%w: line %d: second copy has size %#x, first %#x", ErrConfig, lineNo, d.EnvSize, c.Devices[0].EnvSize)
		}
		c.Devices = append(c.Devices, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if len(c.Devices) == 0 {
		return nil, fmt.Errorf("%w: no device line", ErrConfig)
	}
	return c, nil
}

// scanDevice mimics sscanf: it returns how many fields converted; it stops
// at the first field that does not.
func scanDevice(line string) (Device, int) {
	var d Device
	s := line
	tok := func() string {
		s = strings.TrimLeft(s, " \t\r\n\v\f")
		i := strings.IndexAny(s, " \t\r\n\v\f")
		if i < 0 {
			i = len(s)
		}
		t := s[:i]
		s = s[i:]
		return t
	}
	d.Path = tok()
	if d.Path == "" {
		return d, 0
	}
	off, ok := scanInt(tok(), 0)
	if !ok {
		return d, 1
	}
	d.Offset = off
	fields := []*int64{&d.EnvSize, &d.SectorSize, &d.SectorCount}
	for i, f := range fields {
		v, ok := scanInt(tok(), 16)
		if !ok || v < 0 {
			return d, 2 + i
		}
		*f = v
	}
	return d, 5
}

// scanInt converts the longest valid prefix of t like strtoll with the given
// base (0: C prefixes); ok is false when no digit converts.
func scanInt(t string, base int) (int64, bool) {
	neg := false
	if t != "" && (t[0] == '+' || t[0] == '-') {
		neg = t[0] == '-'
		t = t[1:]
	}
	if (base == 0 || base == 16) && len(t) > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') && isDigit(t[2], 16) {
		t, base = t[2:], 16
	} else if base == 0 && len(t) > 1 && t[0] == '0' {
		base = 8
	} else if base == 0 {
		base = 10
	}
	var v int64
	n := 0
	for ; n < len(t) && isDigit(t[n], base); n++ {
		d := digitVal(t[n])
		if v > (1<<62)/int64(base) {
			return 0, false // overflow: refuse rather than wrap
		}
		v = v*int64(base) + int64(d)
	}
	if n == 0 {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

func digitVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return 99
}

func isDigit(c byte, base int) bool { return digitVal(c) < base }
