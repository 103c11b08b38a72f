package channel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/journal"
)

// Files of a channel directory (the host side). DocumentFile and
// BundleDir are what the web server serves; DraftFile is the unsigned
// working copy the host commands edit (it holds nothing secret, but
// devices never read it).
const (
	DocumentFile = "channel.json"
	DraftFile    = "draft.json"
	BundleDir    = "bundles"
)

// Draft is the host's working copy: the document without serial and
// times, and how long a signed document stays valid.
type Draft struct {
	Validity string   `json:"validity"` // Go duration, e.g. "168h"
	Document Document `json:"document"`
}

// ErrNoRelease: the named release is not in the draft.
var ErrNoRelease = errors.New("channel: no such release")

// InitDir creates dir with an empty draft for compatible.
func InitDir(dir, compatible string, validity time.Duration) error {
	if !idRe.MatchString(compatible) {
		return fmt.Errorf("%w: compatible %q", ErrMalformed, compatible)
	}
	if validity <= 0 {
		return fmt.Errorf("channel: validity must be positive")
	}
	if err := os.MkdirAll(filepath.Join(dir, BundleDir), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, DraftFile)); err == nil {
		return fmt.Errorf("channel: %s exists already", filepath.Join(dir, DraftFile))
	}
	d := &Draft{Validity: validity.String(), Document: Document{Format: Format, Compatible: compatible, Releases: []Release{}}}
	return d.Save(dir)
}

// LoadDraft reads dir's draft.
func LoadDraft(dir string) (*Draft, error) {
	b, err := os.ReadFile(filepath.Join(dir, DraftFile))
	if err != nil {
		return nil, fmt.Errorf("channel: %w (run 'otad channel init' first)", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Draft
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, DraftFile, err)
	}
	return &d, nil
}

// Save writes the draft atomically.
func (d *Draft) Save(dir string) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, DraftFile), append(b, '\n'))
}

// Release returns the release with id.
func (d *Draft) Release(id string) (*Release, error) {
	for i := range d.Document.Releases {
		if d.Document.Releases[i].ID == id {
			return &d.Document.Releases[i], nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrNoRelease, id)
}

// AddOptions name a bundle (and deltas) to publish as a release.
type AddOptions struct {
	ID         string // default: the bundle's version
	Bundle     string // full bundle path
	Deltas     []string
	Rollout    []Stage // default: 100 % now
	MinVersion string
	Window     *Window
	Keyring    *bundle.Keyring // if set, each bundle must verify against it
	Now        time.Time
}

// AddRelease copies the bundles into dir/bundles and adds a release.
func (d *Draft) AddRelease(dir string, o AddOptions) (*Release, error) {
	full, err := inspectBundle(o.Bundle, o.Keyring)
	if err != nil {
		return nil, err
	}
	if full.m.Compatible != d.Document.Compatible {
		return nil, fmt.Errorf("channel: %s is for %q, the channel for %q", o.Bundle, full.m.Compatible, d.Document.Compatible)
	}
	if len(full.m.Images) != 1 || full.m.Images[0].Delta != nil {
		return nil, fmt.Errorf("channel: %s: the full bundle must hold exactly one full image", o.Bundle)
	}
	r := Release{ID: o.ID, Version: full.m.Version, SecurityVersion: full.m.SecurityVersion,
		ImageSHA256: full.m.Images[0].SHA256, State: StateActive, MinVersion: o.MinVersion, Window: o.Window, Rollout: o.Rollout}
	if r.ID == "" {
		r.ID = full.m.Version
	}
	if len(r.Rollout) == 0 {
		r.Rollout = []Stage{{Percent: 100, At: o.Now.UTC().Truncate(time.Second)}}
	}
	if _, err := d.Release(r.ID); err == nil {
		return nil, fmt.Errorf("channel: release %q exists already", r.ID)
	}
	if r.Bundle, err = publish(dir, o.Bundle, full); err != nil {
		return nil, err
	}
	for _, p := range o.Deltas {
		db, err := inspectBundle(p, o.Keyring)
		if err != nil {
			return nil, err
		}
		if len(db.m.Images) != 1 || db.m.Images[0].Delta == nil {
			return nil, fmt.Errorf("channel: %s is not a delta bundle", p)
		}
		if db.m.Images[0].SHA256 != r.ImageSHA256 || db.m.Compatible != d.Document.Compatible {
			return nil, fmt.Errorf("channel: delta %s makes another image than %s", p, o.Bundle)
		}
		f, err := publish(dir, p, db)
		if err != nil {
			return nil, err
		}
		if r.Deltas == nil {
			r.Deltas = map[string]File{}
		}
		r.Deltas[db.m.Images[0].Delta.SourceSHA256] = f
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("%w: release %s: %v", ErrMalformed, r.ID, err)
	}
	d.Document.Releases = append(d.Document.Releases, r)
	return &d.Document.Releases[len(d.Document.Releases)-1], nil
}

type inspected struct {
	m    *bundle.Manifest
	sum  string
	size int64
}

func inspectBundle(path string, kr *bundle.Keyring) (*inspected, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	front, err := bundle.Inspect(io.TeeReader(f, h))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if kr != nil {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		br, err := bundle.NewReader(f, bundle.Options{Keyring: kr, Compatible: front.Manifest.Compatible, Now: time.Now()})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for {
			_, err := br.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if _, err := io.Copy(io.Discard, br); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h.Reset()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, err
	}
	return &inspected{m: front.Manifest, sum: hex.EncodeToString(h.Sum(nil)), size: n}, nil
}

// publish copies a bundle into dir/bundles (unless it is there already)
// and returns its File with a URL relative to the document.
func publish(dir, path string, in *inspected) (File, error) {
	name := filepath.Base(path)
	dst := filepath.Join(dir, BundleDir, name)
	if abs, _ := filepath.Abs(path); abs != mustAbs(dst) {
		if st, err := os.Stat(dst); err == nil && st.Size() == in.size {
			if sum, err := fileSHA256(dst); err == nil && sum == in.sum {
				return File{URL: BundleDir + "/" + name, Size: in.size, SHA256: in.sum}, nil
			}
		}
		if _, err := os.Stat(dst); err == nil {
			return File{}, fmt.Errorf("channel: %s exists with other content; bundles are never replaced in place", dst)
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return File{}, err
		}
		if err := writeFileAtomic(dst, src); err != nil {
			return File{}, err
		}
	}
	return File{URL: BundleDir + "/" + name, Size: in.size, SHA256: in.sum}, nil
}

func mustAbs(p string) string { a, _ := filepath.Abs(p); return a }

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ParseStages reads a schedule like "1,10@24h,100@72h": percentages, each
// with an optional offset from start (no offset: start).
func ParseStages(spec string, start time.Time) ([]Stage, error) {
	var out []Stage
	for _, part := range strings.Split(spec, ",") {
		p, off, _ := strings.Cut(strings.TrimSpace(part), "@")
		pct, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return nil, fmt.Errorf("rollout stage %q: percent: %v", part, err)
		}
		var d time.Duration
		if off != "" {
			if d, err = time.ParseDuration(off); err != nil || d < 0 {
				return nil, fmt.Errorf("rollout stage %q: offset must be a duration like 24h", part)
			}
		}
		out = append(out, Stage{Percent: pct, At: start.Add(d).UTC().Truncate(time.Second)})
	}
	return out, nil
}

// Advance starts the next stage of r now (widening the rollout), after
// the gate check: the caller passes the release's stats and thresholds.
// It returns the new percentage in basis points.
func (r *Release) Advance(now time.Time) (int, error) {
	if r.State != StateActive {
		return 0, fmt.Errorf("channel: release %s is %s; resume it first", r.ID, r.State)
	}
	for i := range r.Rollout {
		if r.Rollout[i].At.After(now) {
			r.Rollout[i].At = now.UTC()
			if i > 0 && !r.Rollout[i].At.After(r.Rollout[i-1].At) {
				r.Rollout[i].At = r.Rollout[i-1].At.Add(time.Nanosecond)
			}
			bp, _ := basisPoints(r.Rollout[i].Percent)
			return bp, nil
		}
	}
	return 0, fmt.Errorf("channel: release %s is at its last stage already", r.ID)
}

// Pause freezes the rollout at now; Resume shifts the stages not reached
// at the pause by the time spent paused; Halt stops the release.
func (r *Release) Pause(now time.Time) {
	r.State, r.PausedAt = StatePaused, now.UTC().Truncate(time.Second)
}

// Resume continues a paused (or halted) release.
func (r *Release) Resume(now time.Time) {
	if r.State == StatePaused {
		shift := now.UTC().Truncate(time.Second).Sub(r.PausedAt)
		for i := range r.Rollout {
			if r.Rollout[i].At.After(r.PausedAt) {
				r.Rollout[i].At = r.Rollout[i].At.Add(shift)
			}
		}
	}
	r.State, r.PausedAt = StateActive, time.Time{}
}

// Halt stops every new install of the release.
func (r *Release) Halt() { r.State, r.PausedAt = StateHalted, time.Time{} }

// SignDir signs the draft as the next serial and writes dir/channel.json.
// The serial is one above both the draft's and the published document's,
// so a lost draft can never make the serial go down.
func SignDir(dir string, rand io.Reader, now time.Time, keys ...Signer) (*Document, error) {
	d, err := LoadDraft(dir)
	if err != nil {
		return nil, err
	}
	validity, err := time.ParseDuration(d.Validity)
	if err != nil || validity <= 0 {
		return nil, fmt.Errorf("%w: draft validity %q", ErrMalformed, d.Validity)
	}
	serial := d.Document.Serial
	if old, err := os.ReadFile(filepath.Join(dir, DocumentFile)); err == nil {
		if s, ok := peekSerial(old); ok && s > serial {
			serial = s
		}
	}
	doc := d.Document
	doc.Serial = serial + 1
	doc.Created = now.UTC().Truncate(time.Second)
	doc.Expires = doc.Created.Add(validity)
	b, err := Encode(&doc)
	if err != nil {
		return nil, err
	}
	signed, err := Sign(rand, b, keys...)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, DocumentFile)
	prev, prevErr := os.Stat(path)
	if err := writeFileAtomic(path, signed); err != nil {
		return nil, err
	}
	// Servers derive the ETag from mtime and size (nginx: both in hex). A
	// re-sign within the same second at the same size would keep the ETag
	// and devices would get 304 for the new document; move the mtime on.
	if cur, err := os.Stat(path); err == nil && prevErr == nil && cur.Size() == prev.Size() && !cur.ModTime().Truncate(time.Second).After(prev.ModTime().Truncate(time.Second)) {
		t := prev.ModTime().Truncate(time.Second).Add(time.Second)
		if err := os.Chtimes(path, t, t); err != nil {
			return nil, err
		}
	}
	d.Document.Serial = doc.Serial
	if err := d.Save(dir); err != nil {
		return nil, err
	}
	return &doc, nil
}

// peekSerial reads the serial of a published document WITHOUT verifying it
// (host side only: it can only raise the next serial).
func peekSerial(signed []byte) (uint64, bool) {
	i := bytes.Index(signed, []byte("\n\n"))
	if i < 0 {
		return 0, false
	}
	var d struct {
		Serial uint64 `json:"serial"`
	}
	if json.Unmarshal(signed[i+2:], &d) != nil {
		return 0, false
	}
	return d.Serial, true
}

// writeFileAtomic replaces a host file: temp file, fsync, rename, then
// the directory synced (the module's one atomic-file helper).
func writeFileAtomic(path string, data []byte) error {
	return journal.WriteFileAtomic(journal.OSFS{}, path, data)
}
