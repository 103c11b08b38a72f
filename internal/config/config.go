// Package config reads otad's system configuration, /etc/otad/system.conf.
//
// The format is INI-like: "[section]" headers, "key = value" lines, '#' or
// ';' starting a comment line. Parsing is strict: an unknown section or key,
// a repeated key that is not repeatable, or a value of the wrong shape is an
// error naming the line, because a typo in an update daemon's configuration
// should stop it at start, not silently change where it writes. Every key is
// documented in docs/configuration.md; keep that file in step with Keys.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/otadev/otad/internal/fetch"
)

// DefaultPath is where the daemon looks when no -config is given.
const DefaultPath = "/etc/otad/system.conf"

// Reboot policies.
const (
	RebootAuto   = "auto"   // reboot as soon as the new slot is armed
	RebootManual = "manual" // wait for a Reboot request
)

// [system] single-env: what to do with a single-copy U-Boot env on FAT.
const (
	SingleEnvRefuse = "refuse" // refuse to arm a slot (default)
	SingleEnvAccept = "accept" // arm anyway: the integrator accepts the risk
)

// Watchdog modes (see docs/configuration.md and the health package).
const (
	WatchdogSystemd = "systemd"
	WatchdogOtad    = "otad"
	WatchdogNone    = "none"
)

// Config is the parsed, defaulted and validated configuration.
type Config struct {
	Compatible    string
	DataDir       string
	EnvConfig     string
	EnvLock       string // "" the bootenv default lock file; "-" no lock
	SingleEnv     string // SingleEnvRefuse or SingleEnvAccept
	BootLimit     int
	Reboot        string   // RebootAuto or RebootManual
	RebootCommand []string // empty: StartUnit reboot.target over D-Bus
	Cmdline       string

	Keyring Keyring
	Slots   []Slot
	Health  Health
	Hawkbit Hawkbit // hawkbit.go
	Fetch   Fetch
	Compat  Compat
	Channel Channel
}

// Keyring says where the trusted public keys live and how many must sign.
type Keyring struct {
	Directory string
	Threshold int
	// DecryptionKey is the device's (or its group's) PKCS#8 key for
	// encrypted bundles; "" refuses them. Loaded, and its mode checked, by
	// the daemon (internal/daemon/decryption.go).
	DecryptionKey string
}

// Slot is one [slot.CLASS.INDEX] section.
type Slot struct {
	Class    string // e.g. "rootfs"
	Index    int
	Name     string // "A" or "B"
	Device   string
	Type     string // block | mtd | ubivol | file
	Bootname string // value of otad_slot that boots it; defaults to Name
	Size     int64  // type=file only: size of the backing file (0: keep existing size)
}

// Health configures the trial-boot confirmation.
type Health struct {
	Target         string
	Timeout        time.Duration
	NoFailedUnits  bool
	Checks         [][]string
	CheckTimeout   time.Duration
	Watchdog       string
	WatchdogDevice string
}

// Fetch configures bundle downloads.
type Fetch struct {
	CA, Cert, Key string
	Headers       [][2]string // in file order; a name may repeat
	MinRate       int64       // bytes per second, 0 = off
	Timeout       time.Duration
	// Origins are the URL prefixes (fetch.ParseOrigin) that get Headers
	// and the client certificate; other URLs get neither.
	Origins []string
	// Redirects is the redirect policy: same-origin (default), none, any.
	Redirects string
}

// Channel configures the static update channel client (internal/channel);
// off while URL is empty.
type Channel struct {
	URL          string        // the signed channel document
	Interval     time.Duration // between polls
	Jitter       time.Duration // each poll moves by up to ± this
	ReportURL    string        // outcome reports are POSTed here ("" none)
	DeviceIDFile string        // the secret device id (bucket input; never sent)
}

// Compat switches on the interfaces otad serves for other updaters'
// clients. All are off by default.
type Compat struct {
	// RaucDBus: also own de.pengutronix.rauc and serve RAUC's Installer
	// interface (internal/raucapi).
	RaucDBus bool
}

// Default returns the configuration an empty file yields (it does not
// validate: compatible and slots have no defaults).
func Default() *Config {
	return &Config{
		DataDir:   "/var/lib/otad",
		EnvConfig: "/etc/fw_env.config",
		BootLimit: 3,
		Reboot:    RebootAuto,
		SingleEnv: SingleEnvRefuse,
		Cmdline:   "/proc/cmdline",
		Keyring:   Keyring{Directory: "/etc/otad/keys", Threshold: 1},
		Health: Health{
			Target:         "boot-complete.target",
			Timeout:        5 * time.Minute,
			CheckTimeout:   time.Minute,
			Watchdog:       WatchdogSystemd,
			WatchdogDevice: "/dev/watchdog",
		},
		Fetch:   Fetch{MinRate: 1024, Timeout: 4 * time.Hour},
		Channel: Channel{Interval: time.Hour, Jitter: 10 * time.Minute, DeviceIDFile: "/etc/machine-id"},
	}
}

// Error is a problem at one line of the file (Line 0: the file as a whole).
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config: %s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config: %s: %s", e.File, e.Msg)
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// key describes one accepted key: how to apply a value to the Config.
type key struct {
	repeatable bool
	set        func(c *Config, s *Slot, v string) error
}

// sectionKeys lists the keys of each section kind ("slot" stands for every
// [slot.CLASS.INDEX]).
var sectionKeys = map[string]map[string]key{
	"system": {
		"compatible":     {set: func(c *Config, _ *Slot, v string) error { c.Compatible = v; return nil }},
		"data-dir":       {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.DataDir, v) }},
		"env-config":     {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.EnvConfig, v) }},
		"env-lock":       {set: func(c *Config, _ *Slot, v string) error { return lockPath(&c.EnvLock, v) }},
		"bootlimit":      {set: func(c *Config, _ *Slot, v string) error { return intRange(&c.BootLimit, v, 1, 9) }},
		"reboot":         {set: func(c *Config, _ *Slot, v string) error { return oneOf(&c.Reboot, v, RebootAuto, RebootManual) }},
		"reboot-command": {set: func(c *Config, _ *Slot, v string) error { a, err := SplitArgs(v); c.RebootCommand = a; return err }},
		"cmdline":        {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Cmdline, v) }},
		"single-env":     {set: func(c *Config, _ *Slot, v string) error { return singleEnv(&c.SingleEnv, v) }},
	},
	"keyring": {
		"directory":      {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Keyring.Directory, v) }},
		"threshold":      {set: func(c *Config, _ *Slot, v string) error { return intRange(&c.Keyring.Threshold, v, 1, 16) }},
		"decryption-key": {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Keyring.DecryptionKey, v) }},
	},
	"slot": {
		"name":     {set: func(_ *Config, s *Slot, v string) error { return oneOf(&s.Name, v, "A", "B") }},
		"device":   {set: func(_ *Config, s *Slot, v string) error { s.Device = v; return nonEmpty(v) }},
		"type":     {set: func(_ *Config, s *Slot, v string) error { return oneOf(&s.Type, v, "block", "mtd", "ubivol", "file") }},
		"bootname": {set: func(_ *Config, s *Slot, v string) error { s.Bootname = v; return nonEmpty(v) }},
		"size":     {set: func(_ *Config, s *Slot, v string) error { n, err := ParseSize(v); s.Size = n; return err }},
	},
	"health": {
		"target":          {set: func(c *Config, _ *Slot, v string) error { c.Health.Target = v; return nil }},
		"timeout":         {set: func(c *Config, _ *Slot, v string) error { return duration(&c.Health.Timeout, v) }},
		"no-failed-units": {set: func(c *Config, _ *Slot, v string) error { return boolean(&c.Health.NoFailedUnits, v) }},
		"check": {repeatable: true, set: func(c *Config, _ *Slot, v string) error {
			a, err := SplitArgs(v)
			if err == nil && len(a) == 0 {
				err = errors.New("empty command")
			}
			c.Health.Checks = append(c.Health.Checks, a)
			return err
		}},
		"check-timeout": {set: func(c *Config, _ *Slot, v string) error { return duration(&c.Health.CheckTimeout, v) }},
		"watchdog": {set: func(c *Config, _ *Slot, v string) error {
			return oneOf(&c.Health.Watchdog, v, WatchdogSystemd, WatchdogOtad, WatchdogNone)
		}},
		"watchdog-device": {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Health.WatchdogDevice, v) }},
	},
	"channel": {
		"url":            {set: func(c *Config, _ *Slot, v string) error { return httpURL(&c.Channel.URL, v) }},
		"interval":       {set: func(c *Config, _ *Slot, v string) error { return duration(&c.Channel.Interval, v) }},
		"jitter":         {set: func(c *Config, _ *Slot, v string) error { return duration(&c.Channel.Jitter, v) }},
		"report-url":     {set: func(c *Config, _ *Slot, v string) error { return httpURL(&c.Channel.ReportURL, v) }},
		"device-id-file": {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Channel.DeviceIDFile, v) }},
	},
	"compat": {
		"rauc-dbus": {set: func(c *Config, _ *Slot, v string) error { return boolean(&c.Compat.RaucDBus, v) }},
	},
	"hawkbit": hawkbitKeys, // hawkbit.go
	"fetch": {
		"ca":   {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Fetch.CA, v) }},
		"cert": {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Fetch.Cert, v) }},
		"key":  {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Fetch.Key, v) }},
		"header": {repeatable: true, set: func(c *Config, _ *Slot, v string) error {
			name, val, ok := strings.Cut(v, ":")
			name = strings.TrimSpace(name)
			if !ok || name == "" || strings.ContainsAny(name, " \t") {
				return errors.New(`want "Name: value"`)
			}
			c.Fetch.Headers = append(c.Fetch.Headers, [2]string{name, strings.TrimSpace(val)})
			return nil
		}},
		"min-rate": {set: func(c *Config, _ *Slot, v string) error { n, err := ParseSize(v); c.Fetch.MinRate = n; return err }},
		"timeout":  {set: func(c *Config, _ *Slot, v string) error { return duration(&c.Fetch.Timeout, v) }},
		"origins": {repeatable: true, set: func(c *Config, _ *Slot, v string) error {
			if _, err := fetch.ParseOrigin(v); err != nil {
				return err
			}
			c.Fetch.Origins = append(c.Fetch.Origins, v)
			return nil
		}},
		"redirects": {set: func(c *Config, _ *Slot, v string) error {
			_, err := fetch.ParseRedirectPolicy(v)
			c.Fetch.Redirects = v
			return err
		}},
	},
}

// Parse reads a configuration; name is used in error messages.
func Parse(r io.Reader, name string) (*Config, error) {
	c := Default()
	var (
		section string
		cur     *Slot
		seen    = map[string]int{} // "section\x00key" → line, for non-repeatable keys
		secSeen = map[string]int{}
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' || text[0] == ';' {
			continue
		}
		if text[0] == '[' {
			if !strings.HasSuffix(text, "]") {
				return nil, &Error{name, line, fmt.Sprintf("malformed section header %q", text)}
			}
			section = strings.TrimSpace(text[1 : len(text)-1])
			if prev, dup := secSeen[section]; dup {
				return nil, &Error{name, line, fmt.Sprintf("section [%s] repeated (first at line %d)", section, prev)}
			}
			secSeen[section] = line
			cur = nil
			if strings.HasPrefix(section, "slot.") {
				s, err := parseSlotSection(section)
				if err != nil {
					return nil, &Error{name, line, err.Error()}
				}
				c.Slots = append(c.Slots, s)
				cur = &c.Slots[len(c.Slots)-1]
			} else if _, ok := sectionKeys[section]; !ok || section == "slot" {
				return nil, &Error{name, line, fmt.Sprintf("unknown section [%s]", section)}
			}
			continue
		}
		k, v, ok := strings.Cut(text, "=")
		if !ok {
			return nil, &Error{name, line, fmt.Sprintf("want key = value, got %q", text)}
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if section == "" {
			return nil, &Error{name, line, fmt.Sprintf("key %q outside any section", k)}
		}
		kind := section
		if cur != nil {
			kind = "slot"
		}
		spec, ok := sectionKeys[kind][k]
		if !ok {
			return nil, &Error{name, line, fmt.Sprintf("unknown key %q in [%s]", k, section)}
		}
		id := section + "\x00" + k
		if prev, dup := seen[id]; dup && !spec.repeatable {
			return nil, &Error{name, line, fmt.Sprintf("key %q repeated in [%s] (first at line %d)", k, section, prev)}
		}
		seen[id] = line
		if err := spec.set(c, cur, v); err != nil {
			return nil, &Error{name, line, fmt.Sprintf("%s: %v", k, err)}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &Error{name, line + 1, err.Error()}
	}
	if err := c.validate(); err != nil {
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return c, nil
}

func parseSlotSection(section string) (Slot, error) {
	parts := strings.Split(section, ".")
	if len(parts) != 3 || parts[1] == "" {
		return Slot{}, fmt.Errorf("slot section must be [slot.CLASS.INDEX], got [%s]", section)
	}
	idx, err := strconv.Atoi(parts[2])
	if err != nil || idx < 0 || idx > 1 {
		return Slot{}, fmt.Errorf("slot index in [%s] must be 0 or 1", section)
	}
	return Slot{Class: parts[1], Index: idx, Type: "block"}, nil
}

func (c *Config) validate() error {
	if c.Compatible == "" {
		return errors.New("[system] compatible is required")
	}
	names := map[string]bool{}
	for i := range c.Slots {
		s := &c.Slots[i]
		where := fmt.Sprintf("[slot.%s.%d]", s.Class, s.Index)
		if s.Name == "" || s.Device == "" {
			return fmt.Errorf("%s needs name and device", where)
		}
		if s.Bootname == "" {
			s.Bootname = s.Name
		}
		if s.Size != 0 && s.Type != "file" {
			return fmt.Errorf("%s: size is only for type = file", where)
		}
		k := s.Class + "/" + s.Name
		if names[k] {
			return fmt.Errorf("%s: slot %s of class %s defined twice", where, s.Name, s.Class)
		}
		names[k] = true
	}
	if !names["rootfs/A"] || !names["rootfs/B"] {
		return errors.New("need [slot.rootfs.0] and [slot.rootfs.1] with name = A and name = B")
	}
	if c.Health.Watchdog == WatchdogOtad && c.Health.WatchdogDevice == "" {
		return errors.New("[health] watchdog = otad needs watchdog-device")
	}
	if (len(c.Fetch.Headers) > 0 || c.Fetch.Cert != "") && len(c.Fetch.Origins) == 0 {
		// Credentials are only sent inside origins: without one they
		// would silently go nowhere.
		return errors.New("[fetch] header and cert need origins (the URL prefixes they may be sent to)")
	}
	return c.Hawkbit.validate()
}

// Slot returns the slot of class with the given name (A or B).
func (c *Config) Slot(class, name string) (Slot, bool) {
	for _, s := range c.Slots {
		if s.Class == class && s.Name == name {
			return s, true
		}
	}
	return Slot{}, false
}

func absPath(dst *string, v string) error {
	if v == "" || !strings.HasPrefix(v, "/") {
		return fmt.Errorf("want an absolute path, got %q", v)
	}
	*dst = v
	return nil
}

// lockPath is absPath that also takes "-" (no lock).
// singleEnv accepts the [system] single-env values.
func singleEnv(dst *string, v string) error {
	return oneOf(dst, v, SingleEnvRefuse, SingleEnvAccept)
}

func lockPath(dst *string, v string) error {
	if v == "-" {
		*dst = v
		return nil
	}
	return absPath(dst, v)
}

// httpURL accepts an absolute http(s) URL; the error never repeats the
// value (it may carry credentials).
func httpURL(dst *string, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an absolute http:// or https:// URL")
	}
	*dst = v
	return nil
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	return nil
}

func intRange(dst *int, v string, lo, hi int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return fmt.Errorf("want an integer in %d..%d, got %q", lo, hi, v)
	}
	*dst = n
	return nil
}

func oneOf(dst *string, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			*dst = v
			return nil
		}
	}
	return fmt.Errorf("want one of %s, got %q", strings.Join(allowed, "|"), v)
}

func duration(dst *time.Duration, v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a positive duration like 30s or 5m, got %q", v)
	}
	*dst = d
	return nil
}

func boolean(dst *bool, v string) error {
	switch strings.ToLower(v) {
	case "true", "yes", "1", "on":
		*dst = true
	case "false", "no", "0", "off":
		*dst = false
	default:
		return fmt.Errorf("want true or false, got %q", v)
	}
	return nil
}

// ParseSize reads a byte count with an optional K, M or G suffix (powers of 1024).
func ParseSize(v string) (int64, error) {
	mult := int64(1)
	s := strings.TrimSuffix(strings.ToUpper(v), "B")
	s = strings.TrimSuffix(s, "I")
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("want a size like 4096, 64K or 8M, got %q", v)
	}
	return n * mult, nil
}

// SplitArgs splits a command line into words: whitespace separates, single
// and double quotes group, backslash escapes the next character outside
// single quotes. No variables, no globbing: the command runs without a shell.
func SplitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
		quote rune
		esc   bool
	)
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\' && quote != '\'':
			esc, inArg = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inArg = r, true
		case r == ' ' || r == '\t':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if esc || quote != 0 {
		return nil, errors.New("unterminated quote or trailing backslash")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
