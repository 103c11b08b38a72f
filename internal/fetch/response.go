package fetch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// StatusError is an HTTP status the server answered with. Permanent
// statuses (4xx except 408 and 429) end the Source at once; the others are
// retried and returned wrapped when the retry budget is spent.
type StatusError struct {
	URL        string
	Code       int
	Status     string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	kind := "giving up"
	if e.Temporary() {
		kind = "retryable"
	}
	msg := fmt.Sprintf("fetch: GET %s: %s (%s)", e.URL, e.Status, kind)
	switch e.Code {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg += "; check the credentials or client certificate"
	case http.StatusNotFound, http.StatusGone:
		msg += "; check the bundle URL"
	}
	return msg
}

// Temporary reports whether retrying the same request may succeed.
func (e *StatusError) Temporary() bool {
	switch {
	case e.Code == http.StatusRequestTimeout, e.Code == http.StatusTooManyRequests:
		return true
	case e.Code >= 500 && e.Code != http.StatusNotImplemented && e.Code != http.StatusHTTPVersionNotSupported:
		return true
	}
	return false
}

func statusError(url string, resp *http.Response, now time.Time) *StatusError {
	// The body is not read: it is the server's text, and errors reach
	// callers who must not see what an arbitrary URL answered.
	e := &StatusError{
		URL:  url,
		Code: resp.StatusCode,
		// Not resp.Status: its reason phrase is the server's text too.
		Status: strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode),
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			e.RetryAfter = d
		}
	}
	return e
}

// parseRetryAfter accepts delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 63); err == nil {
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		d = 0
	case d > maxRetryAfter:
		d = maxRetryAfter
	}
	return d, true
}

// contentRange is a parsed "bytes first-last/total" (total -1 for "*").
type contentRange struct {
	first, last, total int64
}

func parseContentRange(v string) (contentRange, error) {
	bad := func() (contentRange, error) {
		return contentRange{}, fmt.Errorf("%w: Content-Range %q", ErrBadResponse, v)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return bad()
	}
	span, total, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return bad()
	}
	var cr contentRange
	var err error
	if cr.first, err = parseNonNeg(a); err != nil {
		return bad()
	}
	if cr.last, err = parseNonNeg(b); err != nil || cr.last < cr.first {
		return bad()
	}
	if total == "*" {
		cr.total = -1
	} else if cr.total, err = parseNonNeg(total); err != nil || cr.last >= cr.total {
		return bad()
	}
	return cr, nil
}

func parseNonNeg(s string) (int64, error) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}

// validator picks what If-Range may carry: a strong ETag, else
// Last-Modified. Weak ETags are not allowed in If-Range (RFC 9110 §13.1.5).
func validator(h http.Header) string {
	if et := h.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		return et
	}
	return h.Get("Last-Modified")
}

// permanentNetErr reports transport errors no retry can fix: the peer's
// certificate is not trusted or does not match, the peer does not speak
// TLS, or it rejected our handshake with an alert (e.g. our client
// certificate is missing or unknown).
func permanentNetErr(err error) bool {
	var (
		unknownCA *x509.UnknownAuthorityError
		invalid   *x509.CertificateInvalidError
		hostname  *x509.HostnameError
		verify    *tls.CertificateVerificationError
		record    *tls.RecordHeaderError
		op        *net.OpError
	)
	if errors.As(err, &op) && op.Op == "remote error" {
		return true // crypto/tls reports a received alert this way
	}
	return errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &verify) || errors.As(err, &record)
}
