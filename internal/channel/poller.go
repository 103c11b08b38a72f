package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/otadev/otad/internal/bundle"
)

// Doer sends one HTTP request (*http.Client).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// ErrNoDocument: the server answered 304 to a device holding no document
// (a misbehaving cache), or nothing was accepted yet.
var ErrNoDocument = errors.New("channel: no accepted document")

// Poller fetches, verifies and accepts the channel document. It remembers
// the accepted document and its ETag in memory, so an unchanged document
// costs one conditional request and a 304; the accepted state itself lives
// in Store. A Poller is not safe for concurrent use.
type Poller struct {
	URL        string          // the signed channel document
	Client     Doer            // nil: http.DefaultClient
	Keyring    *bundle.Keyring // channel keyring (see Keyring)
	Compatible string
	Store      StateStore

	base   *url.URL
	etag   string
	doc    *Document
	st     State
	loaded bool
}

// Fetched is one poll's transport outcome.
type Fetched struct {
	Status   int   // 200 or 304
	Bytes    int64 // body bytes read
	Accepted bool  // a new document (serial or content) was accepted
	Doc      *Document
}

// Fetch polls the document once at clock (the device's time). On a 200 the
// body is verified (Open), parsed and accepted (Accept) and the new state
// saved before the document is used; on a 304 the document accepted before
// is used if it has not expired. A refused document leaves the previous
// one in place and is reported as the error.
func (p *Poller) Fetch(ctx context.Context, clock time.Time) (Fetched, error) {
	var f Fetched
	if !p.loaded {
		st, err := p.Store.Load()
		if err != nil {
			return f, err
		}
		base, err := url.Parse(p.URL)
		if err != nil {
			return f, fmt.Errorf("channel: url: %w", redact(err))
		}
		p.st, p.base, p.loaded = st, base, true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return f, fmt.Errorf("channel: %w", redact(err))
	}
	if p.etag != "" && p.doc != nil {
		req.Header.Set("If-None-Match", p.etag)
	}
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return f, fmt.Errorf("channel: poll %s: %w", safeURL(p.base), redact(err))
	}
	defer resp.Body.Close()
	f.Status = resp.StatusCode
	switch resp.StatusCode {
	case http.StatusNotModified:
		f.Bytes, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if p.doc == nil {
			return f, fmt.Errorf("%w: 304 to an unconditional request", ErrNoDocument)
		}
		if err := CheckExpiry(p.st, p.doc, clock); err != nil {
			return f, err
		}
		f.Doc = p.doc
		return f, nil
	case http.StatusOK:
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return f, fmt.Errorf("channel: poll %s: HTTP %d", safeURL(p.base), resp.StatusCode)
	}
	if resp.ContentLength > MaxDocumentSize {
		return f, fmt.Errorf("%w: Content-Length %d", ErrTooLarge, resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentSize+1))
	f.Bytes = int64(len(body))
	if err != nil {
		return f, fmt.Errorf("channel: poll %s: %w", safeURL(p.base), redact(err))
	}
	docBytes, _, err := Open(body, p.Keyring)
	if err != nil {
		return f, err
	}
	d, err := Parse(docBytes)
	if err != nil {
		return f, err
	}
	st, err := Accept(p.st, d, docBytes, p.Compatible, clock)
	if err != nil {
		return f, err
	}
	if st != p.st {
		if err := p.Store.Save(st); err != nil {
			return f, err
		}
		f.Accepted = true
	}
	p.st, p.doc, p.etag = st, d, resp.Header.Get("ETag")
	f.Doc = d
	return f, nil
}

// State returns the accepted state (after the first Fetch).
func (p *Poller) State() State { return p.st }

// Resolve turns a File's URL into an absolute URL, relative to the
// channel document's URL.
func (p *Poller) Resolve(f File) (string, error) {
	base := p.base
	if base == nil {
		var err error
		if base, err = url.Parse(p.URL); err != nil {
			return "", fmt.Errorf("channel: url: %w", redact(err))
		}
	}
	u, err := base.Parse(f.URL)
	if err != nil {
		return "", fmt.Errorf("channel: bundle url: %w", redact(err))
	}
	return u.String(), nil
}

// safeURL prints a URL without userinfo and query (they may hold secrets).
func safeURL(u *url.URL) string {
	if u == nil {
		return "(channel url)"
	}
	c := *u
	c.User, c.RawQuery, c.ForceQuery = nil, "", false
	return c.String()
}

// redact strips the URL (userinfo, query) from a *url.Error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return &url.Error{Op: ue.Op, URL: safeURL(u), Err: ue.Err}
		}
		return &url.Error{Op: ue.Op, URL: "(url)", Err: ue.Err}
	}
	return err
}
