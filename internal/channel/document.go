package channel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Format is the document format this package reads and writes.
const Format = 1

// Limits on a document; anything larger is refused before it is parsed.
const (
	MaxDocumentSize = 1 << 20 // bytes of the whole signed file
	MaxReleases     = 64
	MaxDeltas       = 64 // per release
	MaxStages       = 16 // per release
	MaxSignatures   = 16
)

// Release states.
const (
	StateActive = "active" // the rollout follows its schedule
	StatePaused = "paused" // frozen at the percentage reached at PausedAt
	StateHalted = "halted" // no device starts this release (forced updates neither)
)

// Errors a caller may branch on.
var (
	ErrMalformed    = errors.New("channel: malformed document")
	ErrIncompatible = errors.New("channel: document is for another compatible")
	ErrReplay       = errors.New("channel: document serial lower than the one accepted before (replayed or rolled back)")
	ErrEquivocation = errors.New("channel: same serial as the accepted document but different content")
	ErrExpired      = errors.New("channel: document expired")
	ErrTooLarge     = errors.New("channel: document too large")
)

// Document is the channel: everything a device of one compatible needs to
// decide what to install.
type Document struct {
	Format     int       `json:"format"`
	Compatible string    `json:"compatible"`
	Serial     uint64    `json:"serial"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Releases   []Release `json:"releases"`
}

// Release is one installable release and its rollout.
type Release struct {
	// ID names the release in buckets, reports and host commands; a new
	// ID reshuffles which devices go first.
	ID              string `json:"id"`
	Version         string `json:"version"`
	SecurityVersion uint64 `json:"security_version"`
	// ImageSHA256 is the rootfs image the release installs: a device whose
	// active slot holds it has the release already.
	ImageSHA256 string `json:"image_sha256"`
	Bundle      File   `json:"bundle"`
	// Deltas are delta bundles keyed by the hex SHA-256 of the image they
	// patch (the active slot's image).
	Deltas   map[string]File `json:"deltas,omitempty"`
	Rollout  []Stage         `json:"rollout"`
	State    string          `json:"state"`
	PausedAt time.Time       `json:"paused_at,omitzero"`
	// MinVersion: a device running an older version installs this release
	// whatever its bucket and the rollout stage (not when halted).
	MinVersion string  `json:"min_version,omitempty"`
	Window     *Window `json:"window,omitempty"`
}

// File is a bundle on the server; URL is absolute or relative to the
// channel document's URL.
type File struct {
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Stage: from At on, Percent of the devices (by bucket) take the release.
type Stage struct {
	Percent float64   `json:"percent"`
	At      time.Time `json:"at"`
}

// Window is a daily maintenance window in the device's local time, "HH:MM"
// each; End before Start wraps past midnight. Installs start only inside it.
type Window struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Field shapes, checked by hand: no regexp engine in the device binary for
// four fixed patterns.
type shapeCheck func(string) bool

var (
	// idRe: 1-64 of [A-Za-z0-9._+~-], starting with a letter or digit.
	idRe      = shapeCheck(isID)
	versionRe = idRe
	// sha256Re: 64 lower-case hex digits.
	sha256Re = shapeCheck(func(s string) bool {
		if len(s) != 64 {
			return false
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	})
	// clockRe: HH:MM, 00:00 to 23:59.
	clockRe = shapeCheck(func(s string) bool {
		return len(s) == 5 && s[2] == ':' && (s[0] >= '0' && s[0] <= '1' && s[1] >= '0' && s[1] <= '9' ||
			s[0] == '2' && s[1] >= '0' && s[1] <= '3') && s[3] >= '0' && s[3] <= '5' && s[4] >= '0' && s[4] <= '9'
	})
)

// MatchString reports whether s has the shape.
func (f shapeCheck) MatchString(s string) bool { return f(s) }

func isID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._+~-", rune(c))) {
			return false
		}
	}
	return true
}

// Encode is the canonical encoding the host signs: fixed field order,
// sorted map keys, UTC times, two-space indent, one trailing newline.
// Devices verify the exact bytes they fetched, never a re-encoding.
func Encode(d *Document) ([]byte, error) {
	c := *d
	c.Created, c.Expires = c.Created.UTC(), c.Expires.UTC()
	c.Releases = append([]Release(nil), d.Releases...)
	for i := range c.Releases {
		r := &c.Releases[i]
		r.Rollout = append([]Stage(nil), r.Rollout...)
		for j := range r.Rollout {
			r.Rollout[j].At = r.Rollout[j].At.UTC()
		}
		if !r.PausedAt.IsZero() {
			r.PausedAt = r.PausedAt.UTC()
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("channel: encode: %w", err)
	}
	return append(b, '\n'), nil
}

// Parse decodes a document strictly (unknown fields, trailing data and
// invalid values are errors). Call it only on bytes Open has verified.
func Parse(b []byte) (*Document, error) {
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the document", ErrMalformed)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Validate checks every field's shape and the cross-field rules.
func (d *Document) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if d.Format != Format {
		return bad("format %d, want %d", d.Format, Format)
	}
	if !idRe.MatchString(d.Compatible) {
		return bad("compatible %q", d.Compatible)
	}
	if d.Serial == 0 {
		return bad("serial must be at least 1")
	}
	if d.Created.IsZero() || !d.Expires.After(d.Created) {
		return bad("expires (%s) must be after created (%s)", d.Expires.Format(time.RFC3339), d.Created.Format(time.RFC3339))
	}
	if len(d.Releases) > MaxReleases {
		return bad("%d releases, at most %d", len(d.Releases), MaxReleases)
	}
	ids := map[string]bool{}
	for i := range d.Releases {
		r := &d.Releases[i]
		if err := r.validate(); err != nil {
			return bad("release %d (%q): %v", i, r.ID, err)
		}
		if ids[r.ID] {
			return bad("release id %q twice", r.ID)
		}
		ids[r.ID] = true
	}
	return nil
}

func (r *Release) validate() error {
	if !idRe.MatchString(r.ID) {
		return fmt.Errorf("id must be 1-64 of [A-Za-z0-9._+~-]")
	}
	if !versionRe.MatchString(r.Version) {
		return fmt.Errorf("version %q", r.Version)
	}
	if !sha256Re.MatchString(r.ImageSHA256) {
		return errors.New("image_sha256 must be 64 lower-case hex digits")
	}
	if err := r.Bundle.validate(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if len(r.Deltas) > MaxDeltas {
		return fmt.Errorf("%d deltas, at most %d", len(r.Deltas), MaxDeltas)
	}
	for src, f := range r.Deltas {
		if !sha256Re.MatchString(src) {
			return fmt.Errorf("delta key %q must be a source image SHA-256 (64 lower-case hex digits)", src)
		}
		if err := f.validate(); err != nil {
			return fmt.Errorf("delta from %.12s: %w", src, err)
		}
	}
	if len(r.Rollout) == 0 || len(r.Rollout) > MaxStages {
		return fmt.Errorf("rollout needs 1 to %d stages", MaxStages)
	}
	prevBP := 0
	for j, s := range r.Rollout {
		bp, ok := basisPoints(s.Percent)
		if !ok || bp == 0 {
			return fmt.Errorf("stage %d: percent %v must be in (0, 100] with at most two decimals", j, s.Percent)
		}
		if s.At.IsZero() {
			return fmt.Errorf("stage %d: no start time", j)
		}
		if j > 0 && (!s.At.After(r.Rollout[j-1].At) || bp <= prevBP) {
			return fmt.Errorf("stage %d: stages must grow in time and percent", j)
		}
		prevBP = bp
	}
	switch r.State {
	case StateActive, StateHalted:
		if !r.PausedAt.IsZero() {
			return fmt.Errorf("paused_at is only for state %q", StatePaused)
		}
	case StatePaused:
		if r.PausedAt.IsZero() {
			return fmt.Errorf("state %q needs paused_at", StatePaused)
		}
	default:
		return fmt.Errorf("state %q, want %s, %s or %s", r.State, StateActive, StatePaused, StateHalted)
	}
	if r.MinVersion != "" {
		if !versionRe.MatchString(r.MinVersion) {
			return fmt.Errorf("min_version %q", r.MinVersion)
		}
		if CompareVersions(r.MinVersion, r.Version) > 0 {
			return fmt.Errorf("min_version %s is above the release's own version %s", r.MinVersion, r.Version)
		}
	}
	if r.Window != nil {
		if !clockRe.MatchString(r.Window.Start) || !clockRe.MatchString(r.Window.End) || r.Window.Start == r.Window.End {
			return fmt.Errorf("window %q-%q: want two different HH:MM times", r.Window.Start, r.Window.End)
		}
	}
	return nil
}

func (f *File) validate() error {
	if f.URL == "" || len(f.URL) > 2048 || strings.ContainsAny(f.URL, " \t\r\n") {
		return fmt.Errorf("url %q", f.URL)
	}
	if f.Size <= 0 {
		return fmt.Errorf("size %d", f.Size)
	}
	if !sha256Re.MatchString(f.SHA256) {
		return errors.New("sha256 must be 64 lower-case hex digits")
	}
	return nil
}

// basisPoints turns a percentage with at most two decimals into 1/100 %.
func basisPoints(p float64) (int, bool) {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return 0, false
	}
	bp := math.Round(p * 100)
	if math.Abs(bp-p*100) > 1e-6 {
		return 0, false
	}
	return int(bp), true
}

// PercentAt is the share of devices (basis points, 0..10000) the release
// is rolled out to at t: the last stage started by t, frozen at PausedAt
// while paused, 0 while halted.
func (r *Release) PercentAt(t time.Time) int {
	switch r.State {
	case StateHalted:
		return 0
	case StatePaused:
		if r.PausedAt.Before(t) {
			t = r.PausedAt
		}
	}
	bp := 0
	for _, s := range r.Rollout {
		if !s.At.After(t) {
			bp, _ = basisPoints(s.Percent)
		}
	}
	return bp
}

// InWindow reports whether local (the device's local time) is inside the
// release's maintenance window; no window means always.
func (r *Release) InWindow(local time.Time) bool {
	if r.Window == nil {
		return true
	}
	now := local.Hour()*60 + local.Minute()
	start, end := clockMinutes(r.Window.Start), clockMinutes(r.Window.End)
	if start < end {
		return now >= start && now < end
	}
	return now >= start || now < end
}

func clockMinutes(s string) int {
	h, _ := strconv.Atoi(s[:2])
	m, _ := strconv.Atoi(s[3:])
	return h*60 + m
}

// CompareVersions orders release versions: they are split at '.', '-',
// '+' and '~'; numeric parts compare as numbers, others as strings, and a
// version that is a prefix of another is older ("2.0" < "2.0.1").
func CompareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '~' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.ParseUint(pa[i], 10, 64)
		nb, eb := strconv.ParseUint(pb[i], 10, 64)
		switch {
		case ea == nil && eb == nil:
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
		case ea == nil: // numbers sort before words ("1.0.1" > "1.0.rc1" is not claimed)
			return -1
		case eb == nil:
			return 1
		default:
			if c := strings.Compare(pa[i], pb[i]); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(pa) < len(pb):
		return -1
	case len(pa) > len(pb):
		return 1
	}
	return 0
}
