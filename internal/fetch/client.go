package fetch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// newClient builds the default HTTP client from the TLS and proxy options.
// No overall timeout: a bundle streams for minutes; the rate watchdog and
// Deadline bound it instead.
func newClient(o Options) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fetch: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fetch: CA file %s: no PEM certificates in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("fetch: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case o.CertFile != "" || o.KeyFile != "":
		return nil, errors.New("fetch: client certificate needs both CertFile and KeyFile")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.Proxy = o.Proxy
	if tr.Proxy == nil {
		tr.Proxy = http.ProxyFromEnvironment
	}
	// Compression would break byte offsets; requests ask for identity.
	tr.DisableCompression = true
	tr.ResponseHeaderTimeout = 0
	return &http.Client{Transport: tr}, nil
}

// watchdog abandons a request when fewer than need bytes arrived in the
// last window. It runs on its own timer because a stalled Read never
// returns to let the reader check anything.
type watchdog struct {
	window time.Duration
	need   int64
	cancel func()
	n      atomic.Int64 // bytes received, added by the reader
	slow   atomic.Bool

	mu      sync.Mutex
	t       *time.Timer
	last    int64
	stopped bool
}

func startWatchdog(minRate int64, window time.Duration, cancel func()) *watchdog {
	w := &watchdog{window: window, cancel: cancel}
	if minRate < 0 {
		return w
	}
	w.need = max(1, int64(float64(minRate)*window.Seconds()))
	w.mu.Lock()
	w.t = time.AfterFunc(window, w.check)
	w.mu.Unlock()
	return w
}

func (w *watchdog) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	cur := w.n.Load()
	if cur-w.last < w.need {
		w.slow.Store(true)
		w.cancel()
		return
	}
	w.last = cur
	w.t.Reset(w.window)
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
}
