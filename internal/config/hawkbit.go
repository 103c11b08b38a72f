package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Hawkbit configures the Eclipse hawkBit DDI client (internal/hawkbit);
// off while Server is empty. Zero fields get their defaults in validate.
type Hawkbit struct {
	Server       string // base URL of the DDI API
	Tenant       string // default "DEFAULT"
	ControllerID string // "" derived from /etc/machine-id at start
	TokenFile    string // "" no token (mTLS through a reverse proxy)
	TokenType    string // "target" (default) or "gateway"
	PollMin      time.Duration
	PollMax      time.Duration
	Attributes   [][2]string // extra configData entries, in file order
	MaxResumes   int
	Part         string // chunk part holding the .otab, default "os"

	maxResumesSet bool
}

// Enabled reports whether [hawkbit] is configured.
func (h Hawkbit) Enabled() bool { return h.Server != "" }

// Defaults of [hawkbit].
const (
	HawkbitTenant     = "DEFAULT"
	HawkbitTokenType  = "target"
	HawkbitPollMin    = 10 * time.Second
	HawkbitPollMax    = time.Hour
	HawkbitMaxResumes = 5
	HawkbitPart       = "os"
)

// hawkbitAttrReserved are the attributes otad reports itself; a
// configured extra may not override them.
var hawkbitAttrReserved = map[string]bool{"compatible": true, "version": true, "booted_slot": true, "otad_version": true}

var hawkbitKeys = map[string]key{
	"server": {set: func(c *Config, _ *Slot, v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			// The value is not repeated: it could carry credentials.
			return errors.New("want an http:// or https:// URL without userinfo, query or fragment")
		}
		c.Hawkbit.Server = v
		return nil
	}},
	"tenant": {set: func(c *Config, _ *Slot, v string) error { return pathSegment(&c.Hawkbit.Tenant, v) }},
	"controller-id": {set: func(c *Config, _ *Slot, v string) error {
		return pathSegment(&c.Hawkbit.ControllerID, v)
	}},
	"token-file": {set: func(c *Config, _ *Slot, v string) error { return absPath(&c.Hawkbit.TokenFile, v) }},
	"token-type": {set: func(c *Config, _ *Slot, v string) error {
		if v != "target" && v != "gateway" {
			return errors.New("want target or gateway")
		}
		c.Hawkbit.TokenType = v
		return nil
	}},
	"poll-min": {set: func(c *Config, _ *Slot, v string) error { return positiveDuration(&c.Hawkbit.PollMin, v) }},
	"poll-max": {set: func(c *Config, _ *Slot, v string) error { return positiveDuration(&c.Hawkbit.PollMax, v) }},
	"max-resumes": {set: func(c *Config, _ *Slot, v string) error {
		c.Hawkbit.maxResumesSet = true
		return intRange(&c.Hawkbit.MaxResumes, v, 0, 100)
	}},
	"part": {set: func(c *Config, _ *Slot, v string) error { return pathSegment(&c.Hawkbit.Part, v) }},
	"attribute": {repeatable: true, set: func(c *Config, _ *Slot, v string) error {
		name, val, ok := strings.Cut(v, "=")
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if !ok || name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
			return errors.New(`want NAME=VALUE, NAME of letters, digits, "_", ".", "-"`)
		}
		if hawkbitAttrReserved[name] {
			return fmt.Errorf("attribute %s is reported by otad itself", name)
		}
		c.Hawkbit.Attributes = append(c.Hawkbit.Attributes, [2]string{name, val})
		return nil
	}},
}

// pathSegment accepts a value that is used as one URL path segment.
func pathSegment(dst *string, v string) error {
	if v == "" || strings.ContainsAny(v, "/?#% \t") {
		return errors.New(`want a non-empty name without "/", "?", "#", "%" or spaces`)
	}
	*dst = v
	return nil
}

func positiveDuration(dst *time.Duration, v string) error {
	if err := duration(dst, v); err != nil {
		return err
	}
	if *dst <= 0 {
		return errors.New("want a positive duration")
	}
	return nil
}

// validate checks [hawkbit] as a whole and fills its defaults.
func (h *Hawkbit) validate() error {
	if !h.Enabled() {
		if h.Tenant != "" || h.ControllerID != "" || h.TokenFile != "" || h.TokenType != "" || h.PollMin != 0 ||
			h.PollMax != 0 || len(h.Attributes) > 0 || h.maxResumesSet || h.Part != "" {
			return errors.New("[hawkbit] needs server (the client is off without it)")
		}
		return nil
	}
	if h.Tenant == "" {
		h.Tenant = HawkbitTenant
	}
	if h.TokenType == "" {
		h.TokenType = HawkbitTokenType
	}
	if h.PollMin == 0 {
		h.PollMin = HawkbitPollMin
	}
	if h.PollMax == 0 {
		h.PollMax = HawkbitPollMax
	}
	if h.PollMax < h.PollMin {
		return errors.New("[hawkbit] poll-max is below poll-min")
	}
	if h.Part == "" {
		h.Part = HawkbitPart
	}
	if !h.maxResumesSet {
		h.MaxResumes = HawkbitMaxResumes
	}
	return nil
}
