package fetch

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// ErrRedirect ends a download whose server redirected it where the
// redirect policy does not allow.
var ErrRedirect = errors.New("fetch: redirect refused")

// Origin is a URL prefix credentials are bound to: scheme, host and port
// match exactly, the path by whole segments ("/updates" covers
// "/updates" and "/updates/b.otab", not "/updates-old/b.otab").
type Origin struct {
	Scheme string // "http" or "https"
	Host   string // lower case, no port; IPv6 without brackets
	Port   string // explicit or the scheme's default
	Path   string // cleaned, starts with "/", no trailing "/" unless it is "/"
}

// ParseOrigin parses an origin prefix strictly: http or https, a host, no
// userinfo, query or fragment, no dot segments, empty or repeated path
// separators, or percent-encoded slashes or dots in the path.
func ParseOrigin(s string) (Origin, error) {
	bad := func(why string) (Origin, error) {
		return Origin{}, fmt.Errorf("fetch: origin %q: %s", RedactURL(s), why)
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("not a URL")
	}
	switch {
	case !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://"):
		return bad("scheme must be http or https (lower case)")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return bad("no host")
	case u.User != nil:
		return bad("userinfo is not allowed (put credentials in header)")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return bad("query and fragment are not allowed")
	}
	o := Origin{Scheme: u.Scheme, Host: strings.ToLower(u.Hostname()), Port: u.Port()}
	if o.Port == "" {
		o.Port = defaultPort(o.Scheme)
	}
	p, ok := cleanPath(u)
	if !ok {
		return bad("path must be plain: no dot segments, empty segments or encoded slashes and dots")
	}
	o.Path = p
	return o, nil
}

// String is the origin as a URL prefix.
func (o Origin) String() string {
	host := o.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if o.Port != defaultPort(o.Scheme) {
		host += ":" + o.Port
	}
	return o.Scheme + "://" + host + o.Path
}

// Match reports whether u lies inside o. A URL whose path is not plain
// (dot segments, encoded slashes or dots) matches nothing: a server may
// resolve it somewhere else than its text says.
func (o Origin) Match(u *url.URL) bool {
	if u == nil || !sameSite(o, u) || u.User != nil {
		return false
	}
	p, ok := cleanPath(u)
	if !ok {
		return false
	}
	if o.Path == "/" || p == o.Path {
		return true
	}
	return strings.HasPrefix(p, o.Path+"/")
}

// sameSite: scheme, host and port of u are o's.
func sameSite(o Origin, u *url.URL) bool {
	port := u.Port()
	if port == "" {
		port = defaultPort(strings.ToLower(u.Scheme))
	}
	return strings.EqualFold(u.Scheme, o.Scheme) && strings.EqualFold(u.Hostname(), o.Host) && port == o.Port
}

// siteOf is the scheme, host and port of u as an Origin with path "/".
func siteOf(u *url.URL) Origin {
	o := Origin{Scheme: strings.ToLower(u.Scheme), Host: strings.ToLower(u.Hostname()), Port: u.Port(), Path: "/"}
	if o.Port == "" {
		o.Port = defaultPort(o.Scheme)
	}
	return o
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// cleanPath returns u's path without a trailing slash ("/" for none) and
// whether it is plain.
func cleanPath(u *url.URL) (string, bool) {
	esc := strings.ToLower(u.EscapedPath())
	if strings.Contains(esc, "%2f") || strings.Contains(esc, "%2e") || strings.Contains(esc, "%5c") || strings.Contains(u.Path, "\\") {
		return "", false
	}
	p := u.Path
	if p == "" || p == "/" {
		return "/", true
	}
	if p[0] != '/' {
		return "", false
	}
	segs := strings.Split(strings.TrimSuffix(p[1:], "/"), "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", false
		}
	}
	return "/" + strings.Join(segs, "/"), true
}

// RedirectPolicy says which redirects a download follows.
type RedirectPolicy int

const (
	// RedirectSameOrigin (the default) follows a redirect only to the same
	// scheme, host and port as the URL given to Open and, when that URL
	// lies in a configured credential origin, only within that origin.
	RedirectSameOrigin RedirectPolicy = iota
	// RedirectNone follows no redirect.
	RedirectNone
	// RedirectAny follows any redirect to http or https (credentials still
	// go only to their origins).
	RedirectAny
)

// maxRedirects bounds a redirect chain.
const maxRedirects = 10

// ParseRedirectPolicy parses "same-origin", "none" or "any".
func ParseRedirectPolicy(s string) (RedirectPolicy, error) {
	switch s {
	case "same-origin":
		return RedirectSameOrigin, nil
	case "none":
		return RedirectNone, nil
	case "any":
		return RedirectAny, nil
	}
	return 0, fmt.Errorf("fetch: redirect policy %q: want same-origin, none or any", s)
}

func (p RedirectPolicy) String() string {
	switch p {
	case RedirectNone:
		return "none"
	case RedirectAny:
		return "any"
	}
	return "same-origin"
}

// Credential is what one origin gets: headers and a client certificate.
type Credential struct {
	Headers [][2]string // name, value; a name may repeat
	Cert    *tls.Certificate
}

type credEntry struct {
	origin Origin
	cred   Credential
}

// Credentials binds request headers and client certificates to origins.
// A request gets the credential of the longest origin that contains its
// URL, re-decided at every redirect hop, and nothing when none does. The
// zero value is empty and ready; it is safe for concurrent use, so a fleet
// client may add or rotate a token while downloads run (a running
// download sees the change at its next request).
type Credentials struct {
	mu      sync.RWMutex
	entries []credEntry // longest origin path first
}

// Add binds headers ("Name: value") to the origin prefix. A header name
// already bound to that exact origin is replaced (so Add rotates a token);
// repeated names within one call are all sent.
func (c *Credentials) Add(originPrefix string, headers []string) error {
	o, err := ParseOrigin(originPrefix)
	if err != nil {
		return err
	}
	hs, err := parseHeaders(headers)
	if err != nil {
		return err
	}
	c.update(o, func(cr *Credential) {
		cr.Headers = slices.DeleteFunc(cr.Headers, func(h [2]string) bool {
			return slices.ContainsFunc(hs, func(n [2]string) bool { return strings.EqualFold(n[0], h[0]) })
		})
		cr.Headers = append(cr.Headers, hs...)
	})
	return nil
}

// SetClientCert binds the PEM client certificate and key to the origin
// prefix (loaded now, so a bad pair fails here), replacing an earlier one.
func (c *Credentials) SetClientCert(originPrefix, certFile, keyFile string) error {
	o, err := ParseOrigin(originPrefix)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("fetch: client certificate: %w", err)
	}
	c.update(o, func(cr *Credential) { cr.Cert = &cert })
	return nil
}

// Remove drops everything bound to the exact origin prefix.
func (c *Credentials) Remove(originPrefix string) error {
	o, err := ParseOrigin(originPrefix)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = slices.DeleteFunc(c.entries, func(e credEntry) bool { return e.origin == o })
	return nil
}

// Origins lists the origin prefixes that hold a credential.
func (c *Credentials) Origins() []string {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, len(c.entries))
	for i, e := range c.entries {
		out[i] = e.origin.String()
	}
	return out
}

func (c *Credentials) update(o Origin, f func(*Credential)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		if c.entries[i].origin == o {
			cr := c.entries[i].cred
			cr.Headers = slices.Clone(cr.Headers)
			f(&cr)
			c.entries[i].cred = cr
			return
		}
	}
	var cr Credential
	f(&cr)
	c.entries = append(c.entries, credEntry{origin: o, cred: cr})
	slices.SortStableFunc(c.entries, func(a, b credEntry) int { return len(b.origin.Path) - len(a.origin.Path) })
}

// lookup returns the credential for u and the origin it came from.
func (c *Credentials) lookup(u *url.URL) (Credential, *Origin) {
	if c == nil {
		return Credential{}, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.entries {
		if e.origin.Match(u) {
			o := e.origin
			return e.cred, &o
		}
	}
	return Credential{}, nil
}

func parseHeaders(in []string) ([][2]string, error) {
	out := make([][2]string, 0, len(in))
	for _, h := range in {
		name, val, ok := strings.Cut(h, ":")
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if !ok || !validHeaderName(name) || !validHeaderValue(val) {
			// The value may be a secret: name only the header.
			return nil, fmt.Errorf("fetch: header %q: want \"Name: value\" without control characters", name)
		}
		out = append(out, [2]string{name, val})
	}
	return out, nil
}

// RequestOptions are one download's own settings from an in-process
// caller (a fleet client, a compat API): the daemon's OpenSource reads
// them from update.SourceOptions(ctx) and applies them with Apply. Headers
// ("Name: value") and the client certificate are bound to the origin
// (scheme, host, port) of the URL they came with; CAFile replaces the
// trusted roots for this download.
type RequestOptions struct {
	Headers           []string
	CertFile, KeyFile string
	CAFile            string
}

// Apply returns o with r's settings for one download.
func (r RequestOptions) Apply(o Options) (Options, error) {
	if len(r.Headers) > 0 {
		hs, err := parseHeaders(r.Headers)
		if err != nil {
			return o, err
		}
		m := make(map[string]string, len(o.Headers)+len(hs))
		for k, v := range o.Headers {
			m[k] = v
		}
		for _, h := range hs {
			k := http.CanonicalHeaderKey(h[0])
			if prev, ok := m[k]; ok {
				m[k] = prev + ", " + h[1]
			} else {
				m[k] = h[1]
			}
		}
		o.Headers = m
	}
	if r.CertFile != "" || r.KeyFile != "" {
		o.CertFile, o.KeyFile = r.CertFile, r.KeyFile
	}
	if r.CAFile != "" {
		o.CAFile = r.CAFile
	}
	return o, nil
}

// credFor is what a request to u carries: the configured origin's
// credential, plus the caller's own for the URL given to Open when u is
// on that URL's site.
func (s *httpSource) credFor(u *url.URL) (Credential, *Origin) {
	cr, o := s.opts.Credentials.lookup(u)
	if sameSite(s.site, u) && u.User == nil {
		cr.Headers = slices.Concat(cr.Headers, s.ownHeaders)
		if s.ownCert != nil {
			cr.Cert = s.ownCert
		}
	}
	return cr, o
}

// credTransport adds, at every hop of a redirect chain, the credential of
// that hop's URL, and presents a client certificate only on connections
// made for a URL its origin covers (one transport per certificate, so a
// pooled connection never carries a certificate to another origin).
type credTransport struct {
	src   *httpSource
	plain *http.Transport
	mu    sync.Mutex
	certd map[*tls.Certificate]*http.Transport
}

func (t *credTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cr, _ := t.src.credFor(req.URL)
	r := req.Clone(req.Context())
	for _, h := range cr.Headers {
		r.Header.Add(h[0], h[1])
	}
	tr := t.plain
	if cr.Cert != nil && strings.EqualFold(req.URL.Scheme, "https") {
		tr = t.withCert(cr.Cert)
	}
	return tr.RoundTrip(r)
}

func (t *credTransport) withCert(c *tls.Certificate) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.certd[c]; ok {
		return tr
	}
	tr := t.plain.Clone()
	tr.TLSClientConfig = t.plain.TLSClientConfig.Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{*c}
	if t.certd == nil {
		t.certd = map[*tls.Certificate]*http.Transport{}
	}
	t.certd[c] = tr
	return tr
}

func (t *credTransport) CloseIdleConnections() {
	t.plain.CloseIdleConnections()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.certd {
		tr.CloseIdleConnections()
	}
}

// checkRedirect enforces the redirect policy. Its error names the target
// redacted.
func (s *httpSource) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrRedirect, maxRedirects)
	}
	to := req.URL
	if to.Scheme != "http" && to.Scheme != "https" {
		return fmt.Errorf("%w: to %s (not http or https)", ErrRedirect, RedactURL(to.String()))
	}
	switch s.opts.Redirects {
	case RedirectAny:
		return nil
	case RedirectNone:
		return fmt.Errorf("%w: to %s (redirects = none)", ErrRedirect, RedactURL(to.String()))
	}
	if !sameSite(s.site, to) {
		return fmt.Errorf("%w: to %s, another origin than %s (redirects = same-origin)", ErrRedirect, RedactURL(to.String()), s.site)
	}
	if _, o := s.opts.Credentials.lookup(s.u); o != nil && !o.Match(to) {
		return fmt.Errorf("%w: to %s, outside the configured origin %s", ErrRedirect, RedactURL(to.String()), o)
	}
	return nil
}

// RedactURL returns the URL in s without userinfo, query and fragment: the
// form that may appear in errors, logs and bus properties. A string that
// does not parse is cut at the first '?' or '#' and loses anything before
// an '@' in its authority.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		if u.Opaque != "" {
			return u.Scheme + ":" + cutQuery(u.Opaque)
		}
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		return u.String()
	}
	s = cutQuery(s)
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		auth, path, _ := strings.Cut(rest, "/")
		if j := strings.LastIndex(auth, "@"); j >= 0 {
			auth = auth[j+1:]
		}
		s = s[:i+3] + auth
		if path != "" || strings.Contains(rest, "/") {
			s += "/" + path
		}
	}
	return s
}

func cutQuery(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i]
	}
	return s
}

// RedactText replaces every URL in s (a scheme://… run, as in errors and log
// lines) by its RedactURL form. A hand scanner, not a regexp: regexp would
// add about 130 KB to the device binary for this one use.
func RedactText(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	i := 0 // s[:i] is in b
	for {
		k := strings.Index(s[i:], "://")
		if k < 0 {
			break
		}
		k += i
		// The scheme: the longest run of scheme bytes before "://" that
		// starts with a letter.
		st := k
		for st > i && isSchemeByte(s[st-1]) {
			st--
		}
		for st < k && !isASCIILetter(s[st]) {
			st++
		}
		end := k + 3
		for end < len(s) && !isURLStop(s[end]) {
			end++
		}
		if st == k || end == k+3 { // no scheme, or nothing after "://"
			b.WriteString(s[i : k+3])
			i = k + 3
			continue
		}
		b.WriteString(s[i:st])
		b.WriteString(RedactURL(s[st:end]))
		i = end
	}
	b.WriteString(s[i:])
	return b.String()
}

func isASCIILetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isSchemeByte(c byte) bool {
	return isASCIILetter(c) || c >= '0' && c <= '9' || c == '+' || c == '.' || c == '-'
}

// isURLStop ends a URL in free text: white space, quotes, angle brackets.
func isURLStop(c byte) bool {
	return strings.IndexByte(" \t\n\f\r\"'<>`", c) >= 0
}

// validHeaderName: an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// validHeaderValue: no control characters but tab (no CR/LF smuggling).
func validHeaderValue(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
