package channel

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"time"
)

// Buckets is the number of rollout buckets: a stage of p % includes the
// devices whose bucket is below p·100.
const Buckets = 10000

// Bucket is the device's place in a release's rollout: the first 8 bytes
// (big endian) of SHA-256(release id, 0x00, device id) mod 10,000. It is
// stable for a device and release (across restarts, with no state), differs
// between releases so the same devices are not always first, and reveals
// nothing of the device id.
func Bucket(releaseID, deviceID string) int {
	h := sha256.New()
	h.Write([]byte(releaseID))
	h.Write([]byte{0})
	h.Write([]byte(deviceID))
	var sum [sha256.Size]byte
	return int(binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % Buckets)
}

// Pseudonym is the device id as reports carry it: a one-way digest, stable
// per device, unrelated to its buckets.
func Pseudonym(deviceID string) string {
	s := sha256.Sum256([]byte("otad channel report\x00" + deviceID))
	return hex.EncodeToString(s[:16])
}

// Device is what Decide knows of the device.
type Device struct {
	ID          string    // secret device id (machine-id); never sent
	Version     string    // running release version
	ImageSHA256 string    // hex SHA-256 of the active slot's image ("" unknown)
	Now         time.Time // device clock, in its local time zone (maintenance window)
	Skip        []string  // release ids not to try again (rolled back or failed too often here)
}

// Action is what the device should do.
type Action int

// Actions.
const (
	None    Action = iota // nothing applies (up to date, not in the rollout yet, halted)
	Install               // install Decision.Source now
	Wait                  // a release applies but the maintenance window is closed
)

func (a Action) String() string {
	switch a {
	case Install:
		return "install"
	case Wait:
		return "wait"
	}
	return "none"
}

// Decision is Decide's answer.
type Decision struct {
	Action  Action
	Release *Release // the release chosen (Install, Wait)
	// File is the bundle to fetch: a delta whose source is the active
	// image, else the full bundle. Fallback is the full bundle when File
	// is a delta (installed instead if the delta's source check fails).
	File     File
	Fallback *File
	Delta    bool
	Forced   bool // min_version, not the rollout, selected it
	Bucket   int
	Percent  int // the release's rollout at Now, in basis points
	Reason   string
}

// Decide picks the release a device should run from a verified, accepted
// document. Among the releases newer than the running version and not
// already in the active slot, it takes the newest one that includes the
// device — by its bucket and the rollout at now, or by min_version — so a
// device outside the newest release's first stage still gets an older
// release at 100 %. It is pure: no I/O, no clock but dev.Now.
func Decide(d *Document, dev Device) Decision {
	order := make([]*Release, 0, len(d.Releases))
	for i := range d.Releases {
		order = append(order, &d.Releases[i])
	}
	sort.SliceStable(order, func(i, j int) bool { return CompareVersions(order[i].Version, order[j].Version) > 0 })
	best := Decision{Reason: "up to date"}
	for _, r := range order {
		if CompareVersions(r.Version, dev.Version) <= 0 {
			break // sorted: nothing newer follows
		}
		if dev.ImageSHA256 != "" && r.ImageSHA256 == dev.ImageSHA256 {
			return Decision{Reason: fmt.Sprintf("release %s is already in the active slot", r.ID)}
		}
		if slices.Contains(dev.Skip, r.ID) {
			if best.Release == nil {
				best = Decision{Reason: fmt.Sprintf("release %s failed on this device before; not retried", r.ID)}
			}
			continue
		}
		bucket, pct := Bucket(r.ID, dev.ID), r.PercentAt(dev.Now)
		dec := Decision{Release: r, Bucket: bucket, Percent: pct}
		switch {
		case r.State == StateHalted:
			if best.Release == nil {
				best = Decision{Reason: fmt.Sprintf("release %s is halted", r.ID)}
			}
			continue
		case r.MinVersion != "" && CompareVersions(dev.Version, r.MinVersion) < 0:
			dec.Forced = true
			dec.Reason = fmt.Sprintf("running %s is below %s's min_version %s", dev.Version, r.ID, r.MinVersion)
		case bucket < pct:
			dec.Reason = fmt.Sprintf("bucket %d is inside %s's rollout (%s)", bucket, r.ID, formatBP(pct))
		default:
			if best.Release == nil && best.Reason == "up to date" {
				best = Decision{Reason: fmt.Sprintf("bucket %d is outside %s's rollout (%s)", bucket, r.ID, formatBP(pct)), Bucket: bucket, Percent: pct}
			}
			continue
		}
		dec.File = r.Bundle
		if df, ok := r.Deltas[dev.ImageSHA256]; ok && dev.ImageSHA256 != "" {
			full := r.Bundle
			dec.File, dec.Fallback, dec.Delta = df, &full, true
		}
		if !r.InWindow(dev.Now) {
			dec.Action = Wait
			dec.Reason += fmt.Sprintf("; waiting for the maintenance window %s-%s", r.Window.Start, r.Window.End)
			return dec
		}
		dec.Action = Install
		return dec
	}
	return best
}

func formatBP(bp int) string {
	return fmt.Sprintf("%d.%02d %%", bp/100, bp%100)
}
