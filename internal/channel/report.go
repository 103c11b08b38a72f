package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/otadev/otad/internal/journal"
)

// Report results.
const (
	ResultSuccess  = "success"  // the target booted, passed its health check and was committed
	ResultRollback = "rollback" // the target was armed, then marked bad (health check, bootloader fallback)
	ResultFailure  = "failure"  // the install ended before arming (download, refused bundle, write)
)

// Report is one outcome, as POSTed to report-url (one compact JSON object)
// and as `otad channel stats` reads it (one per line).
type Report struct {
	ID      string `json:"id"`     // device pseudonym + "/" + action: the same outcome always has the same id
	Device  string `json:"device"` // Pseudonym(device id)
	Release string `json:"release"`
	From    string `json:"from"`
	To      string `json:"to"`
	Result  string `json:"result"`
	Reason  string `json:"reason,omitempty"`
	// Phases in seconds: "install" (start of the download to armed) and
	// "activate" (armed to committed or rolled back: reboot and health check).
	Phases map[string]float64 `json:"phases,omitempty"`
	Time   time.Time          `json:"time"`
}

// Outbox bounds.
const (
	MaxOutbox  = 32 // reports waiting; the oldest is dropped beyond this
	maxSentIDs = 64 // ids remembered after sending, so a re-spool is a no-op
	maxReason  = 512
)

// outboxFile is the spool: reports waiting to be sent, and the ids of the
// last ones spooled (sent or not).
type outboxFile struct {
	Pending []Report `json:"pending"`
	Seen    []string `json:"seen"`
}

// Outbox is the report spool in the data dir, one file replaced atomically
// (journal.WriteFileAtomic). Add is idempotent per report id; a report
// leaves it only after the collector answered 2xx (or 4xx: it will never
// take it). Safe for concurrent use.
type Outbox struct {
	FS   journal.FS
	Path string
	mu   sync.Mutex
}

func (o *Outbox) load() (outboxFile, error) {
	var f outboxFile
	b, err := journal.ReadFile(o.FS, o.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("channel: outbox: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		// A spool that does not parse holds nothing we can send; start over
		// rather than stop reporting forever.
		return outboxFile{}, nil
	}
	return f, nil
}

func (o *Outbox) save(f outboxFile) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("channel: outbox: %w", err)
	}
	if err := o.FS.MkdirAll(filepath.Dir(o.Path), 0o755); err != nil {
		return fmt.Errorf("channel: outbox: %w", err)
	}
	if err := journal.WriteFileAtomic(o.FS, o.Path, b); err != nil {
		return fmt.Errorf("channel: outbox: %w", err)
	}
	return nil
}

// Add spools r durably unless a report with its id was spooled before.
func (o *Outbox) Add(r Report) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, err := o.load()
	if err != nil {
		return err
	}
	if slices.Contains(f.Seen, r.ID) {
		return nil
	}
	if len(r.Reason) > maxReason {
		r.Reason = r.Reason[:maxReason]
	}
	f.Pending = append(f.Pending, r)
	if n := len(f.Pending) - MaxOutbox; n > 0 {
		f.Pending = f.Pending[n:]
	}
	f.Seen = append(f.Seen, r.ID)
	if n := len(f.Seen) - maxSentIDs; n > 0 {
		f.Seen = f.Seen[n:]
	}
	return o.save(f)
}

// Pending returns the reports waiting to be sent, oldest first.
func (o *Outbox) Pending() ([]Report, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, err := o.load()
	return f.Pending, err
}

func (o *Outbox) remove(id string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, err := o.load()
	if err != nil {
		return err
	}
	f.Pending = slices.DeleteFunc(f.Pending, func(r Report) bool { return r.ID == id })
	return o.save(f)
}

// Flush posts every pending report to reportURL in order and removes each
// one the collector took. It stops at the first transport error or 5xx
// (the caller retries later) and returns how many were delivered.
func (o *Outbox) Flush(ctx context.Context, client Doer, reportURL string) (int, error) {
	reports, err := o.Pending()
	if err != nil {
		return 0, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	sent := 0
	for _, r := range reports {
		b, err := json.Marshal(r)
		if err != nil {
			return sent, fmt.Errorf("channel: report: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, reportURL, bytes.NewReader(b))
		if err != nil {
			return sent, fmt.Errorf("channel: report: %w", redact(err))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return sent, fmt.Errorf("channel: report: %w", redact(err))
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
			u, _ := url.Parse(reportURL)
			return sent, fmt.Errorf("channel: report to %s: HTTP %d", safeURL(u), resp.StatusCode)
		}
		// 2xx: delivered. Other 4xx: the collector will never take it;
		// keeping it would block every later report.
		if err := o.remove(r.ID); err != nil {
			return sent, err
		}
		if resp.StatusCode < 300 {
			sent++
		}
	}
	return sent, nil
}
