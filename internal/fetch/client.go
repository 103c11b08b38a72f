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

// newTransport builds the default transport from the TLS and proxy
// options and loads the caller's own client certificate, which credTransport
// presents only to the site of the URL given to Open. No overall timeout: a
// bundle streams for minutes; the rate watchdog and Deadline bound it
// instead.
func newTransport(o Options) (*http.Transport, *tls.Certificate, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("fetch: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("fetch: CA file %s: no PEM certificates in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	var own *tls.Certificate
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("fetch: client certificate: %w", err)
		}
		own = &cert
	case o.CertFile != "" || o.KeyFile != "":
		return nil, nil, errors.New("fetch: client certificate needs both CertFile and KeyFile")
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
	return tr, own, nil
}

// watchdog abandons a request when, over RateWindow of time spent waiting
// on the network, fewer than need bytes arrived. Only time inside Do and
// body Reads counts: a consumer that pauses between Reads (the engine
// syncing flash or reading a slot back) is not mistaken for a slow server.
// A timer covers the Read that never returns.
type watchdog struct {
	window time.Duration
	need   int64
	cancel func()
	slow   atomic.Bool

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
	waiting bool      // inside Do or a body Read
	since   time.Time // start of the current wait
	waited  time.Duration
	got     int64 // bytes arrived during waited
}

func startWatchdog(minRate int64, window time.Duration, cancel func()) *watchdog {
	w := &watchdog{window: window, cancel: cancel}
	if minRate < 0 {
		return w
	}
	w.need = max(1, int64(float64(minRate)*window.Seconds()))
	w.mu.Lock()
	w.t = time.AfterFunc(window/2, w.tick)
	w.mu.Unlock()
	return w
}

// begin and end bracket one blocking network call that delivered n bytes.
func (w *watchdog) begin() {
	w.mu.Lock()
	w.waiting, w.since = true, time.Now()
	w.mu.Unlock()
}

func (w *watchdog) end(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting = false
	w.waited += time.Since(w.since)
	w.got += int64(n)
	w.judgeLocked(w.waited)
}

func (w *watchdog) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.slow.Load() {
		return
	}
	if w.waiting {
		w.judgeLocked(w.waited + time.Since(w.since))
	}
	w.t.Reset(w.window / 2)
}

// judgeLocked closes a window once enough waiting time has accumulated.
func (w *watchdog) judgeLocked(waited time.Duration) {
	if w.need == 0 || waited < w.window {
		return
	}
	if w.got < w.need {
		w.slow.Store(true)
		w.cancel()
		return
	}
	w.waited, w.got = 0, 0
	if w.waiting {
		w.since = time.Now()
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
}
