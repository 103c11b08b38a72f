// Package fetch opens a bundle source — a local path, "-" for stdin, or an
// http(s):// URL — as one streaming, seekable reader, so the bundle reader
// verifies bytes as they arrive and nothing is staged on disk.
//
// Invariants:
//   - Nothing is written anywhere: no temp files, no cache. After a power
//     cut there is nothing of ours to clean up; the engine's journal records
//     the last verified chunk and resumes by Open + Seek to that offset.
//   - Bytes of two different versions of a remote object are never mixed
//     in one Source. Every request after the first carries If-Range with the
//     first response's validator (strong ETag, else Last-Modified) and every
//     partial response is checked (status, Content-Range start and total,
//     validator). Anything that cannot be proved to be the same object ends
//     the Source with ErrObjectChanged; the caller restarts from zero. A
//     server that sends no validator at all cannot be resumed mid-object.
//   - A Source never hands out more than Options.MaxSize bytes (a hard
//     default cap applies when it is zero); a source offering more ends with
//     ErrTooLarge, and so does a body longer than its declared length.
//   - A transfer that stalls or trickles below Options.MinRate is abandoned
//     and retried; when the retry budget is spent it ends with ErrTooSlow.
//   - An HTTP body is received by one goroutine per connection at most two
//     1 MiB blocks ahead of the caller (see readAhead), so the network works
//     while the caller hashes and writes; the caps above apply to what is
//     handed out, and that goroutine has ended before Seek or Close return.
//   - Credentials go only where they are bound. Configured headers and
//     client certificates live in a Credentials table keyed by origin (a
//     URL prefix: scheme, host, port, whole path segments, see
//     ParseOrigin); each request, every redirect hop included, carries the
//     credential of the longest origin containing its URL and nothing
//     outside all of them. A caller's own Options.Headers/CertFile (per
//     download, e.g. RequestOptions from a fleet or compat API) go only to
//     the scheme, host and port of the URL given to Open. A client
//     certificate is presented only on connections made for its origin.
//     Redirects follow Options.Redirects (default: same origin only).
//   - Errors never carry what a server sent (no body, no reason phrase) nor
//     a URL's userinfo, query or fragment (RedactURL, RedactText), so they
//     may be shown to any caller and written to logs.
//   - A local path is opened O_NOFOLLOW|O_NONBLOCK|O_NOCTTY and refused
//     (ErrNotRegular) unless the opened descriptor is a regular file: a
//     FIFO, device, directory or symlink never blocks or is read. A
//     descriptor a caller opened with its own rights becomes a Source
//     through FromFile.
//
// Runtime credentials (a fleet client's token): the wiring holds one
// *Credentials, puts it in Options.Credentials and gives it to whoever
// learns a credential, which calls Add(originPrefix, []string{"Name:
// value"}) — again to rotate — or Remove; the next request sees it.
//
// A Source is not safe for concurrent use. The context given to Open governs
// the whole life of the Source, not just the Open call.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// Errors callers branch on. HTTP status failures are *StatusError.
var (
	ErrNotSeekable   = errors.New("fetch: source is not seekable")
	ErrObjectChanged = errors.New("fetch: object changed on the server during download")
	ErrTooSlow       = errors.New("fetch: transfer slower than the minimum rate")
	ErrTooLarge      = errors.New("fetch: source larger than allowed")
	ErrBadResponse   = errors.New("fetch: malformed server response")
	ErrClosed        = errors.New("fetch: source is closed")
	// ErrNotRegular refuses a local source that is not a regular file: a
	// FIFO or device could block or never end, a directory is no bundle,
	// a symlink may point where the caller could not read.
	ErrNotRegular = errors.New("fetch: not a regular file")
)

// Defaults applied where an Options field is zero. The size cap is generous
// for a root filesystem bundle but stops an endless stream.
const (
	DefaultMaxSize     = 8 << 30
	DefaultMinRate     = 1 << 10 // bytes/s, averaged over RateWindow
	DefaultRateWindow  = 30 * time.Second
	DefaultMaxRetries  = 10
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffCap  = 30 * time.Second
	// maxRetryAfter bounds how long one Retry-After may park a download.
	maxRetryAfter = 15 * time.Minute
)

// Doer sends one HTTP request; *http.Client satisfies it.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Source is one opened bundle. Seek accepts io.SeekStart and io.SeekCurrent
// (io.SeekEnd too when Size is known); on HTTP it only records the offset and
// the next Read reopens with Range/If-Range. Size is -1 when unknown.
type Source interface {
	io.Reader
	io.Seeker
	io.Closer
	Size() int64
}

// Options configure Open. The zero value is usable: system roots, proxy
// from the environment, default caps and retry policy.
type Options struct {
	// CAFile replaces the system roots with the PEM certificates in it.
	CAFile string
	// CertFile and KeyFile hold the caller's own PEM client certificate
	// for mTLS and Headers its own request headers, for this one download:
	// both go only to the scheme, host and port of the URL given to Open,
	// never along a redirect to another site. Configured, long-lived
	// credentials belong in Credentials.
	CertFile, KeyFile string
	Headers           map[string]string
	// Credentials binds headers and client certificates to origins; each
	// request (every redirect hop) gets the credential of the longest
	// origin containing its URL, and none outside them.
	Credentials *Credentials
	// Redirects is the redirect policy (zero: RedirectSameOrigin).
	Redirects RedirectPolicy
	// MinRate in bytes/s over RateWindow; below it the connection is
	// abandoned and retried. 0 means DefaultMinRate, negative disables.
	MinRate int64
	// Deadline bounds the whole life of the Source (0: none beyond ctx).
	Deadline time.Duration
	// MaxSize caps the bytes a Source will return (0: DefaultMaxSize).
	MaxSize int64
	// Client sends the requests; nil builds an *http.Client from the TLS
	// and Proxy options. When set, CAFile/CertFile/KeyFile/Proxy and
	// Redirects are unused, and credentials are added to each request
	// fetch makes but not to redirects the Doer follows by itself: a Doer
	// given here must not follow redirects across origins.
	Client Doer

	// RateWindow is the watchdog period (0: DefaultRateWindow).
	RateWindow time.Duration
	// MaxRetries is the number of consecutive failed attempts tolerated
	// before giving up (0: DefaultMaxRetries, negative: no retries). An
	// attempt that delivered bytes at an acceptable rate resets the count.
	MaxRetries int
	// BackoffBase and BackoffCap shape the exponential backoff; each delay
	// is drawn from [d/2, d] with d = min(Cap, Base·2^n).
	BackoffBase, BackoffCap time.Duration
	// Proxy picks the proxy for the default client (nil:
	// http.ProxyFromEnvironment).
	Proxy func(*http.Request) (*url.URL, error)
	// Sleep waits between attempts (nil: a timer honouring ctx). Tests
	// inject it to observe delays without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for Retry-After dates and deadline checks (nil:
	// time.Now).
	Now func() time.Time
	// OnRetry, when set, is told about every retry before its delay, so
	// the caller can log it; fetch itself never logs.
	OnRetry func(off int64, attempt int, delay time.Duration, err error)
	// Stdin is read for src "-" (nil: os.Stdin).
	Stdin io.Reader
}

// Open opens src: "-" is stdin, http:// and https:// are streamed, file://
// and anything without a scheme is a local path. For HTTP the first request is sent before Open
// returns, so permanent errors (404, TLS, too large) surface here.
func Open(ctx context.Context, src string, opts Options) (Source, error) {
	opts = opts.withDefaults()
	switch {
	case src == "-":
		in := opts.Stdin
		if in == nil {
			in = os.Stdin
		}
		return &stdinSource{r: in, max: opts.MaxSize}, nil
	case hasScheme(src, "http://"), hasScheme(src, "https://"):
		return openHTTP(ctx, src, opts)
	case hasScheme(src, "file://"):
		u, err := url.Parse(src)
		if err != nil || (u.Host != "" && u.Host != "localhost") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("fetch: bad file URL %q (want file:///path)", RedactURL(src))
		}
		return openFile(u.Path, opts.MaxSize)
	case strings.Contains(src, "://"):
		return nil, fmt.Errorf("fetch: unsupported URL scheme in %q (want http, https, a path or -)", RedactURL(src))
	default:
		return openFile(src, opts.MaxSize)
	}
}

// LowerCap lowers the size cap of a Source from Open to n once the caller
// knows the real size (the engine: from the verified manifest); the cap is
// never raised. Reads stop at the cap and then fail with ErrTooLarge (an
// HTTP source whose declared size already exceeds it fails on the next
// Read). It reports false for a Source not made by Open.
func LowerCap(src Source, n int64) bool {
	c, ok := src.(interface{ lowerCap(int64) })
	if ok {
		c.lowerCap(max(n, 0))
	}
	return ok
}

func hasScheme(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func (o Options) withDefaults() Options {
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.MinRate == 0 {
		o.MinRate = DefaultMinRate
	}
	if o.RateWindow <= 0 {
		o.RateWindow = DefaultRateWindow
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	} else if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffCap <= 0 {
		o.BackoffCap = DefaultBackoffCap
	}
	if o.BackoffCap < o.BackoffBase {
		o.BackoffCap = o.BackoffBase
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff returns the delay before retry number n (0-based): exponential,
// capped, with jitter so a fleet of gateways does not retry in lockstep.
func (o Options) backoff(n int) time.Duration {
	d := o.BackoffCap
	if n < 30 {
		if e := o.BackoffBase << n; e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

// fileSource is a local file. The *os.File is not embedded: its WriteTo
// would let io.Copy bypass the size cap in Read.
type fileSource struct {
	f    *os.File
	size int64
	max  int64
	off  int64
}

// openFlags open a path without being steered by it: no symlink at the
// last component (ELOOP), no blocking on a FIFO's missing writer, no
// controlling terminal. Only a regular file is then accepted, checked on
// the opened descriptor, so nothing can be swapped in between.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOFOLLOW | syscall.O_NOCTTY | syscall.O_CLOEXEC

func openFile(path string, max int64) (Source, error) {
	f, err := os.OpenFile(path, openFlags, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link", ErrNotRegular, path)
		}
		return nil, fmt.Errorf("fetch: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotRegular, path, kindOf(fi.Mode()))
	}
	size := fi.Size()
	if size > max {
		f.Close()
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, path, size, max)
	}
	return &fileSource{f: f, size: size, max: max}, nil
}

// kindOf names a non-regular file type for an error.
func kindOf(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// FromFile makes a Source of an already opened file — a descriptor a
// caller passed in, opened with the caller's rights. It reads with pread
// from offset 0, so it never moves f's offset and several Sources of one f
// (an install opens its bundle more than once) do not disturb each other;
// Close does not close f, which stays the caller's. f must be a regular
// file or, with blockOK, a block device (ErrNotRegular otherwise); name
// is for errors only.
func FromFile(f *os.File, name string, blockOK bool, max int64) (Source, error) {
	if max <= 0 {
		max = DefaultMaxSize
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("fetch: %s: %w", name, err)
	}
	m := fi.Mode()
	size := fi.Size()
	switch {
	case m.IsRegular():
	case blockOK && m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		// Block devices report size 0 in stat; their end offset is real.
		// Seek on f moves its offset, which no pread depends on.
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("fetch: %s: %w", name, err)
		}
	default:
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotRegular, name, kindOf(m))
	}
	if size > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, name, size, max)
	}
	return &preadSource{f: f, name: name, size: size, max: max}, nil
}

// preadSource is FromFile's Source.
type preadSource struct {
	f      *os.File
	name   string
	size   int64
	max    int64
	off    int64
	closed bool
}

func (p *preadSource) Size() int64 { return p.size }

func (p *preadSource) lowerCap(n int64) { p.max = min(p.max, n) }

func (p *preadSource) Read(b []byte) (int, error) {
	if p.closed {
		return 0, ErrClosed
	}
	if p.off >= p.max {
		var one [1]byte
		if n, _ := p.f.ReadAt(one[:], p.off); n > 0 {
			return 0, fmt.Errorf("%w: %s grew past %d bytes", ErrTooLarge, p.name, p.max)
		}
		return 0, io.EOF
	}
	if rem := p.max - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	n, err := p.f.ReadAt(b, p.off)
	p.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (p *preadSource) Seek(off int64, whence int) (int64, error) {
	if p.closed {
		return 0, ErrClosed
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += p.off
	case io.SeekEnd:
		off += p.size
	default:
		return p.off, fmt.Errorf("fetch: seek: invalid whence %d", whence)
	}
	if off < 0 {
		return p.off, fmt.Errorf("fetch: seek to negative offset %d", off)
	}
	p.off = off
	return off, nil
}

func (p *preadSource) Close() error {
	p.closed = true
	return nil
}

func (f *fileSource) Size() int64 { return f.size }

func (f *fileSource) lowerCap(n int64) { f.max = min(f.max, n) }

func (f *fileSource) Read(p []byte) (int, error) {
	// A file can grow while we read it; the cap still holds.
	if f.off >= f.max {
		var one [1]byte
		if n, _ := f.f.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%w: %s grew past %d bytes", ErrTooLarge, f.f.Name(), f.max)
		}
		return 0, io.EOF
	}
	if rem := f.max - f.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := f.f.Read(p)
	f.off += int64(n)
	return n, err
}

func (f *fileSource) Close() error { return f.f.Close() }

func (f *fileSource) Seek(off int64, whence int) (int64, error) {
	n, err := f.f.Seek(off, whence)
	if err == nil {
		f.off = n
	}
	return n, err
}

// stdinSource reads a pipe once; only seeks that do not move are allowed,
// so a caller asking for its position still works.
type stdinSource struct {
	r      io.Reader
	off    int64
	max    int64
	closed bool
}

func (s *stdinSource) Size() int64 { return -1 }

func (s *stdinSource) lowerCap(n int64) { s.max = min(s.max, n) }

func (s *stdinSource) Read(p []byte) (int, error) {
	if s.closed {
		return 0, ErrClosed
	}
	if s.off >= s.max {
		var one [1]byte
		if n, _ := io.ReadFull(s.r, one[:]); n > 0 {
			return 0, fmt.Errorf("%w: stdin sent more than %d bytes", ErrTooLarge, s.max)
		}
		return 0, io.EOF
	}
	if rem := s.max - s.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := s.r.Read(p)
	s.off += int64(n)
	return n, err
}

func (s *stdinSource) Seek(off int64, whence int) (int64, error) {
	switch {
	case whence == io.SeekCurrent && off == 0, whence == io.SeekStart && off == s.off:
		return s.off, nil
	}
	return s.off, ErrNotSeekable
}

func (s *stdinSource) Close() error {
	s.closed = true
	return nil
}
