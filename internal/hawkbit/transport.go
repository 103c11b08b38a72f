package hawkbit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// Token types ([hawkbit] token-type).
const (
	TokenTarget  = "target"
	TokenGateway = "gateway"
)

// ErrTokenFile: the token file is missing, empty or readable by others.
var ErrTokenFile = errors.New("hawkbit: token file")

// ReadToken reads a token file. It is refused when others may read it:
// a token anybody on the device can read lets anybody impersonate it (a
// gateway token: any device of the tenant).
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrTokenFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrTokenFile, err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return "", fmt.Errorf("%w %s is readable by others (mode %04o); chmod o-r it", ErrTokenFile, path, fi.Mode().Perm())
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w %s is not a regular file", ErrTokenFile, path)
	}
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	tok := strings.TrimSpace(string(b[:n]))
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("%w %s: want one line holding the token", ErrTokenFile, path)
	}
	return tok, nil
}

// AuthHeader is the Authorization value for a token of type typ.
func AuthHeader(typ, token string) string {
	if typ == TokenGateway {
		return "GatewayToken " + token
	}
	return "TargetToken " + token
}

// origin is scheme://host:port with the default port made explicit, so
// "https://h" and "https://h:443" compare equal.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// authTransport adds the Authorization header to requests for exactly one
// origin. It works below http.Client, so every redirect hop is judged by
// its own URL: a redirect to another origin goes out without the token.
type authTransport struct {
	base   http.RoundTripper
	origin string
	auth   string
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req
	if t.auth != "" && origin(req.URL) == t.origin {
		r = req.Clone(req.Context())
		r.Header.Set("Authorization", t.auth)
	} else if req.Header.Get("Authorization") != "" {
		// Never forward a credential set by someone else to a foreign origin.
		r = req.Clone(req.Context())
		r.Header.Del("Authorization")
	}
	return t.base.RoundTrip(r)
}

// TLS holds the [fetch] TLS settings the DDI connection reuses.
type TLS struct {
	CAFile, CertFile, KeyFile string
}

// NewTransport builds the transport for DDI requests from the [fetch] TLS
// settings: CA file, client certificate (mTLS through a reverse proxy).
func NewTransport(t TLS) (*http.Transport, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("hawkbit: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hawkbit: CA file %s: no PEM certificates in it", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hawkbit: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, errors.New("hawkbit: client certificate needs both cert and key")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr, nil
}
