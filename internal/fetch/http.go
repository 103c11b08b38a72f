package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// httpSource streams one URL. It holds at most one response open; a broken
// or abandoned response is dropped and the next Read reconnects at s.off
// with Range + If-Range.
type httpSource struct {
	ctx    context.Context
	cancel context.CancelFunc
	url    string // as requested
	u      *url.URL
	site   Origin // scheme, host and port of url
	name   string // redacted, for errors
	opts   Options
	client Doer
	// custom: client is the caller's Doer, which follows redirects its own
	// way; credentials are added to the first request only.
	custom bool
	// ownHeaders and ownCert are the caller's own (Options.Headers,
	// CertFile/KeyFile): they go to the site of url only.
	ownHeaders [][2]string
	ownCert    *tls.Certificate

	bufs [][]byte // read-ahead blocks, reused by every connection

	opened    bool   // the first response has been accepted
	validator string // If-Range value from the first response ("" if none)
	size      int64  // object size, -1 unknown

	off      int64 // offset of the next byte Read returns
	conn     *conn
	pending  error // why the last connection ended early; retried on next Read
	failures int   // consecutive attempts that made no progress
	err      error // terminal; every later Read returns it
	closed   bool
}

// conn is one response being read.
type conn struct {
	body   io.ReadCloser
	in     io.Reader  // what Read takes bytes from: ra once started, else body
	ra     *readAhead // nil until the response is accepted
	end    int64      // offset one past the last byte this body declares, -1 unknown
	got    int64      // bytes delivered on this connection
	wd     *watchdog
	cancel context.CancelFunc
}

func (c *conn) close() {
	c.wd.stop()
	if c.ra != nil {
		c.cancel() // unblocks a pump waiting on the network
		c.ra.halt()
	}
	if c.body != nil {
		c.body.Close()
	}
	c.cancel()
}

// startReadAhead hands the accepted body to a read-ahead pump. Blocks are
// no larger than what the body still declares, so a small object does not
// cost 2 MiB.
func (s *httpSource) startReadAhead(c *conn) {
	size := int64(readAheadBlockSize)
	if c.end >= 0 {
		size = min(size, max(c.end-s.off, readAheadMinBlock))
	}
	if len(s.bufs) == 0 || int64(cap(s.bufs[0])) < size {
		s.bufs = make([][]byte, readAheadBlocks)
		for i := range s.bufs {
			s.bufs[i] = make([]byte, size)
		}
	}
	bufs := make([][]byte, len(s.bufs))
	for i, b := range s.bufs {
		bufs[i] = b[:size]
	}
	c.ra = newReadAhead(c.body, bufs)
	c.in = c.ra
}

// countingBody reports every body Read to the watchdog, including reads
// of bytes skipped rather than returned.
type countingBody struct {
	io.ReadCloser
	wd *watchdog
}

func (b countingBody) Read(p []byte) (int, error) {
	b.wd.begin()
	n, err := b.ReadCloser.Read(p)
	b.wd.end(n)
	return n, err
}

func openHTTP(ctx context.Context, src string, opts Options) (Source, error) {
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("fetch: bad URL %q", RedactURL(src))
	}
	s := &httpSource{url: src, u: u, site: siteOf(u), name: RedactURL(src), opts: opts, size: -1}
	for k, v := range opts.Headers {
		s.ownHeaders = append(s.ownHeaders, [2]string{k, v})
	}
	s.client, s.custom = opts.Client, opts.Client != nil
	if s.client == nil {
		tr, own, err := newTransport(opts)
		if err != nil {
			return nil, err
		}
		s.ownCert = own
		s.client = &http.Client{Transport: &credTransport{src: s, plain: tr}, CheckRedirect: s.checkRedirect}
	}
	var cancel context.CancelFunc
	if opts.Deadline > 0 {
		ctx, cancel = context.WithTimeout(ctx, opts.Deadline)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	s.ctx, s.cancel = ctx, cancel
	if err := s.connect(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

func (s *httpSource) Size() int64 { return s.size }

func (s *httpSource) lowerCap(n int64) {
	s.opts.MaxSize = min(s.opts.MaxSize, n)
	if s.size > s.opts.MaxSize && s.err == nil {
		s.err = fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, s.name, s.size, s.opts.MaxSize)
	}
}

func (s *httpSource) Read(p []byte) (int, error) {
	switch {
	case s.closed:
		return 0, ErrClosed
	case s.err != nil:
		return 0, s.err
	case len(p) == 0:
		return 0, nil
	}
	for {
		if s.conn == nil {
			if s.size >= 0 && s.off >= s.size {
				return 0, io.EOF
			}
			if err := s.connect(); err != nil {
				s.err = err
				return 0, err
			}
			continue
		}
		c := s.conn
		lim := s.opts.MaxSize - s.off
		if c.end >= 0 {
			lim = min(lim, c.end-s.off)
		}
		if lim <= 0 {
			if err := s.atBodyEnd(c); err != nil {
				return 0, err
			}
			if s.size >= 0 && s.off >= s.size || s.off >= s.opts.MaxSize {
				return 0, io.EOF
			}
			continue // a shorter range than asked for; fetch the rest
		}
		n, err := c.in.Read(p[:min(int64(len(p)), lim)])
		s.off += int64(n)
		c.got += int64(n)
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			continue
		case err == io.EOF && s.bodyComplete(c):
			s.dropConn()
			if c.end < 0 && s.size < 0 {
				// A body of unknown length ended cleanly: that is the size.
				s.size = s.off
			}
			if n > 0 {
				return n, nil
			}
			continue
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
		err = s.connErr(c, err)
		s.dropConn()
		if c.got > 0 && !c.wd.slow.Load() {
			s.failures = 0
		}
		s.pending = err
		if n > 0 {
			return n, nil
		}
	}
}

// bodyComplete reports whether a body that hit EOF delivered all it owed.
func (s *httpSource) bodyComplete(c *conn) bool {
	if c.end >= 0 {
		return s.off >= c.end
	}
	return s.size < 0 || s.off >= s.size
}

// atBodyEnd is called when the body has delivered everything it declared
// (or the cap is reached): one more byte means the server sends more than
// it said, which is refused rather than ignored.
func (s *httpSource) atBodyEnd(c *conn) error {
	var one [1]byte
	n, _ := io.ReadFull(c.in, one[:])
	s.dropConn()
	if n > 0 {
		if s.off >= s.opts.MaxSize {
			s.err = fmt.Errorf("%w: %s sends more than %d bytes", ErrTooLarge, s.name, s.opts.MaxSize)
		} else {
			s.err = fmt.Errorf("%w: %s sends more bytes than its declared length %d", ErrTooLarge, s.name, c.end)
		}
		return s.err
	}
	return nil
}

func (s *httpSource) Seek(off int64, whence int) (int64, error) {
	if s.closed {
		return 0, ErrClosed
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += s.off
	case io.SeekEnd:
		if s.size < 0 {
			return s.off, fmt.Errorf("fetch: seek from end: size of %s unknown", s.name)
		}
		off += s.size
	default:
		return s.off, fmt.Errorf("fetch: seek: invalid whence %d", whence)
	}
	if off < 0 {
		return s.off, fmt.Errorf("fetch: seek to negative offset %d", off)
	}
	if off != s.off {
		s.dropConn()
		s.off = off
	}
	return off, nil
}

func (s *httpSource) Close() error {
	if s.closed {
		return nil
	}
	s.dropConn()
	s.cancel()
	s.closed = true
	return nil
}

func (s *httpSource) dropConn() {
	if s.conn != nil {
		s.conn.close()
		s.conn = nil
	}
}

// connect opens a response at s.off, retrying transient failures. If the
// previous connection broke, its error counts as the first failure.
func (s *httpSource) connect() error {
	err := s.pending
	s.pending = nil
	for {
		if err != nil {
			if err = s.backOff(err); err != nil {
				return err
			}
		}
		var c *conn
		if c, err = s.attempt(); err == nil {
			s.conn = c
			return nil
		}
	}
}

// backOff decides whether err is worth another attempt and, if so, waits.
// It returns nil to retry or the error to give up with.
func (s *httpSource) backOff(err error) error {
	if s.ctx.Err() != nil {
		if errors.Is(err, context.Cause(s.ctx)) {
			return err // already says so
		}
		return s.ctxErr(err)
	}
	if !retryable(err) {
		return err
	}
	if s.failures >= s.opts.MaxRetries {
		return fmt.Errorf("fetch: giving up after %d failed attempts: %w", s.failures+1, err)
	}
	delay := s.opts.backoff(s.failures)
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		delay = se.RetryAfter
	}
	if dl, ok := s.ctx.Deadline(); ok && s.opts.Now().Add(delay).After(dl) {
		return fmt.Errorf("fetch: next retry in %v would pass the deadline at offset %d: %w (last error: %w)",
			delay, s.off, context.DeadlineExceeded, err)
	}
	s.failures++
	if s.opts.OnRetry != nil {
		s.opts.OnRetry(s.off, s.failures, delay, err)
	}
	if serr := s.opts.Sleep(s.ctx, delay); serr != nil {
		return s.ctxErr(err)
	}
	return nil
}

func retryable(err error) bool {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		return se.Temporary()
	case errors.Is(err, ErrObjectChanged), errors.Is(err, ErrTooLarge), errors.Is(err, ErrBadResponse):
		return false
	case permanentNetErr(err):
		return false
	}
	return true
}

func (s *httpSource) ctxErr(last error) error {
	cerr := context.Cause(s.ctx)
	if errors.Is(cerr, context.DeadlineExceeded) && s.opts.Deadline > 0 {
		err := fmt.Errorf("fetch: deadline of %v reached at offset %d of %s: %w", s.opts.Deadline, s.off, s.name, cerr)
		if last != nil && !errors.Is(last, cerr) {
			err = fmt.Errorf("%w (last error: %v)", err, last)
		}
		return err
	}
	return fmt.Errorf("fetch: %s at offset %d: %w", s.name, s.off, cerr)
}

// connErr names why a connection ended: the caller's context, the rate
// watchdog, or the network.
func (s *httpSource) connErr(c *conn, err error) error {
	switch {
	case s.ctx.Err() != nil:
		return s.ctxErr(err)
	case c.wd.slow.Load():
		return fmt.Errorf("%w: fewer than %d bytes in %v from %s at offset %d",
			ErrTooSlow, c.wd.need, c.wd.window, s.name, s.off)
	}
	return fmt.Errorf("fetch: %s at offset %d: %w", s.name, s.off, err)
}

// attempt sends one request for s.off onwards and vets the answer.
func (s *httpSource) attempt() (*conn, error) {
	rctx, rcancel := context.WithCancel(s.ctx)
	c := &conn{end: -1, cancel: rcancel}
	c.wd = startWatchdog(s.opts.MinRate, s.opts.RateWindow, rcancel)
	fail := func(err error) (*conn, error) {
		c.close()
		return nil, err
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fail(fmt.Errorf("fetch: %w", err))
	}
	if s.custom {
		cr, _ := s.credFor(req.URL)
		for _, h := range cr.Headers {
			req.Header.Add(h[0], h[1])
		}
	}
	req.Header.Set("Accept-Encoding", "identity")
	if s.opened {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(s.off, 10)+"-")
		if s.validator != "" {
			req.Header.Set("If-Range", s.validator)
		}
	}
	c.wd.begin()
	resp, err := s.client.Do(req)
	c.wd.end(0)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // its text repeats the URL, unredacted query included
	}
	if errors.Is(err, ErrRedirect) {
		return fail(err) // the policy's verdict; no retry changes it
	}
	if err != nil {
		return fail(s.connErr(c, err))
	}
	c.body = countingBody{resp.Body, c.wd}
	c.in = c.body
	resp.Body = c.body // error bodies are read under the watchdog too
	switch resp.StatusCode {
	case http.StatusOK:
		err = s.accept200(c, resp)
	case http.StatusPartialContent:
		err = s.accept206(c, resp)
	case http.StatusRequestedRangeNotSatisfiable:
		if err = s.accept416(); err == nil {
			// Nothing to read at s.off: no connection, Read reports EOF.
			c.close()
			return nil, nil
		}
	default:
		err = statusError(s.name, resp, s.opts.Now())
	}
	if err != nil {
		return fail(err)
	}
	s.opened = true
	s.startReadAhead(c)
	return c, nil
}

func (s *httpSource) accept200(c *conn, resp *http.Response) error {
	v, n := validator(resp.Header), resp.ContentLength
	if n > s.opts.MaxSize {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, s.name, n, s.opts.MaxSize)
	}
	c.end = n
	if !s.opened {
		s.validator, s.size = v, n
		return nil
	}
	switch {
	case s.validator != "" && v != s.validator:
		return fmt.Errorf("%w: %s now has validator %s (was %s); restart from zero", ErrObjectChanged, s.name, v, s.validator)
	case s.size >= 0 && n >= 0 && n != s.size:
		return fmt.Errorf("%w: %s is now %d bytes (was %d); restart from zero", ErrObjectChanged, s.name, n, s.size)
	case s.off == 0:
		return nil
	case s.validator == "":
		return fmt.Errorf("%w: %s answered a range request with the whole object and has no ETag or Last-Modified to prove it is the same; restart from zero",
			ErrObjectChanged, s.name)
	}
	// Same validator but no range support: skip what we already have.
	if _, err := io.CopyN(io.Discard, c.body, s.off); err != nil {
		return s.connErr(c, err)
	}
	return nil
}

func (s *httpSource) accept206(c *conn, resp *http.Response) error {
	cr, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	want := s.off
	if !s.opened {
		want = 0
	}
	if cr.first != want {
		return fmt.Errorf("%w: %s: asked for offset %d, got Content-Range %d-%d", ErrBadResponse, s.name, want, cr.first, cr.last)
	}
	if l := cr.last + 1 - cr.first; resp.ContentLength >= 0 && resp.ContentLength != l {
		return fmt.Errorf("%w: %s: Content-Length %d does not match Content-Range length %d", ErrBadResponse, s.name, resp.ContentLength, l)
	}
	if cr.total > s.opts.MaxSize || cr.last >= s.opts.MaxSize {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, s.name, max(cr.total, cr.last+1), s.opts.MaxSize)
	}
	v := validator(resp.Header)
	switch {
	case !s.opened:
		s.validator, s.size = v, cr.total
	case s.validator == "" && s.off > 0:
		return fmt.Errorf("%w: %s sends no ETag or Last-Modified, so a resumed range cannot be proved to be the same object; restart from zero",
			ErrObjectChanged, s.name)
	case s.validator != "" && v != "" && v != s.validator:
		return fmt.Errorf("%w: %s now has validator %s (was %s); restart from zero", ErrObjectChanged, s.name, v, s.validator)
	case s.size >= 0 && cr.total >= 0 && cr.total != s.size:
		return fmt.Errorf("%w: %s is now %d bytes (was %d); restart from zero", ErrObjectChanged, s.name, cr.total, s.size)
	case s.size < 0:
		s.size = cr.total
	}
	c.end = cr.last + 1
	return nil
}

// accept416: the server says s.off is past the end. With a known size we
// only ask for offsets inside it, so the object must have shrunk.
func (s *httpSource) accept416() error {
	if s.size >= 0 || !s.opened {
		return fmt.Errorf("%w: %s no longer has offset %d (was %d bytes); restart from zero", ErrObjectChanged, s.name, s.off, s.size)
	}
	s.size = s.off
	return nil
}
