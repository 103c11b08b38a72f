package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/otadev/otad/internal/channel"
	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/journal"
)

// startChannel runs the static update channel client ([channel] url) until
// ctx ends; wg waits for it. Without a url it does nothing. A client that
// cannot start (no device id, no channel key) is logged and left off: the
// daemon's own API keeps working.
func (d *Daemon) startChannel(ctx context.Context, wg *sync.WaitGroup) {
	if d.Config.Channel.URL == "" {
		return
	}
	log := d.log.WithField("component", "channel")
	a, err := NewChannelAgent(d)
	if err != nil {
		log.WithError(err).Error("channel client not started")
		return
	}
	a.Logf = log.Infof
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = a.Run(ctx) // returns ctx's error only
	}()
}

// NewChannelAgent wires the channel client from the config: the document's
// keyring is the bundle keyring under role "channel", its state and the
// install in flight live in DATA-DIR/channel.
func NewChannelAgent(d *Daemon) (*channel.Agent, error) {
	c := d.Config.Channel
	if c.Jitter >= c.Interval {
		return nil, fmt.Errorf("[channel] jitter %s must be below interval %s", c.Jitter, c.Interval)
	}
	b, err := os.ReadFile(c.DeviceIDFile)
	if err != nil {
		return nil, fmt.Errorf("[channel] device-id-file: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return nil, errors.New("[channel] device-id-file is empty")
	}
	kr, err := LoadKeyring(d.Config.Keyring)
	if err != nil {
		return nil, err
	}
	ckr, err := channel.Keyring(kr)
	if err != nil {
		return nil, err
	}
	client, err := channelClient(d.Config.Fetch.CA)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(d.Config.DataDir, "channel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	fsys := journal.OSFS{}
	return &channel.Agent{
		Poller: &channel.Poller{URL: c.URL, Client: client, Keyring: ckr, Compatible: d.Config.Compatible,
			Store: &channel.FileStore{FS: fsys, Path: filepath.Join(dir, "state.json")}},
		Engine:    d.Engine,
		DeviceID:  id,
		Actions:   fleet.Store{FS: fsys, Path: filepath.Join(dir, "action.json")},
		FS:        fsys,
		Dir:       dir,
		Outbox:    &channel.Outbox{FS: fsys, Path: filepath.Join(dir, "outbox.json")},
		ReportURL: c.ReportURL,
		Client:    client,
		Interval:  c.Interval,
		Jitter:    c.Jitter,
		Clock:     channel.SystemClock{},
		Rand:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// channelClient is the HTTP client for the document and the reports:
// [fetch] ca replaces the system roots, as for bundles.
func channelClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.IdleConnTimeout = 1, 30*time.Second
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("[fetch] ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("[fetch] ca %s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, nil
}
