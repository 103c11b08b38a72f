package hawkbit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/fleet"
)

// Defaults for zero Config fields.
const (
	DefaultTenant     = "DEFAULT"
	DefaultPart       = "os"
	DefaultPollMin    = 10 * time.Second
	DefaultPollMax    = time.Hour
	DefaultMaxResumes = 5
	// maxJSON bounds a DDI answer; real ones are a few KiB.
	maxJSON = 1 << 20
	// progressStep: a proceeding feedback per this many percent, so an
	// install adds a handful of status entries on the server (which keeps
	// 1000 per action), not one per request.
	progressStep = 25
	// progressTimeout bounds one non-final feedback.
	progressTimeout = 30 * time.Second
)

// Clock is the client's time source; tests inject one to observe the
// waits without sleeping.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config is the [hawkbit] section plus what the wiring supplies.
type Config struct {
	// Server is the base URL (scheme, host, port, optional path prefix).
	Server       string
	Tenant       string
	ControllerID string
	// TokenType is TokenTarget or TokenGateway; Token the secret ("" none:
	// mTLS through a reverse proxy).
	TokenType, Token string
	PollMin, PollMax time.Duration
	// Attributes are extra configData entries, in file order.
	Attributes [][2]string
	MaxResumes int
	// Part is the chunk part holding the .otab artifact.
	Part string
	// AutoReboot reboots once the slot is armed and "downloaded" was sent.
	AutoReboot  bool
	OtadVersion string
	// Store keeps the current action in the data dir.
	Store fleet.Store
	// Credentials is the daemon's fetch credential table: New binds the
	// token to the server's origin there, for artifact downloads.
	Credentials *fetch.Credentials
	// Transport sends DDI requests (nil: http.DefaultTransport); the token
	// is added per request for the server's origin only.
	Transport http.RoundTripper
	Clock     Clock
	// Jitter returns a number in [0,1) (nil: math/rand/v2).
	Jitter func() float64
	// Log receives the client's log lines (nil: discarded).
	Log func(level slog.Level, msg string, kv ...any)
}

// Info is the client's state for D-Bus and otactl status.
type Info struct {
	Server   string
	LastPoll time.Time
	NextPoll time.Time
	// Action is the current action id, Phase where it stands ("" none).
	Action, Phase string
	LastError     string
}

// Client is the DDI client. Create it with New, then Run it.
type Client struct {
	cfg  Config
	u    fleet.Updater
	hc   *http.Client // DDI requests
	auth string
	base string // {server}/{tenant}/controller/v1/{id}

	pollNow chan struct{}

	mu   sync.Mutex
	info Info

	// Owned by the Run goroutine.
	etag         string
	last         *ControllerBase
	attrsSent    string
	failures     int
	act          *fleet.Action
	art          *Download
	lastPct      int
	rebootFailed bool
}

// ControllerIDFromMachineID derives a controller id from a machine-id file
// (/etc/machine-id): the 32 hex digits, which are unique per device.
func ControllerIDFromMachineID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("hawkbit: controller-id from machine-id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("hawkbit: %s does not hold a machine id; set controller-id", path)
	}
	return id, nil
}

// New checks cfg and builds the client. u is the engine.
func New(cfg Config, u fleet.Updater) (*Client, error) {
	su, err := url.Parse(cfg.Server)
	if err != nil || (su.Scheme != "http" && su.Scheme != "https") || su.Host == "" || su.User != nil || su.RawQuery != "" {
		return nil, errors.New("hawkbit: server must be an http(s) URL without userinfo or query")
	}
	if cfg.ControllerID == "" || strings.ContainsAny(cfg.ControllerID, "/?#% ") {
		return nil, fmt.Errorf("hawkbit: bad controller id %q", cfg.ControllerID)
	}
	if cfg.Tenant == "" {
		cfg.Tenant = DefaultTenant
	}
	if cfg.Part == "" {
		cfg.Part = DefaultPart
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = DefaultPollMin
	}
	if cfg.PollMax <= 0 {
		cfg.PollMax = DefaultPollMax
	}
	if cfg.PollMax < cfg.PollMin {
		return nil, errors.New("hawkbit: poll-max is below poll-min")
	}
	if cfg.MaxResumes < 0 {
		cfg.MaxResumes = DefaultMaxResumes
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Log == nil {
		cfg.Log = func(slog.Level, string, ...any) {}
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	if cfg.Store.Path == "" {
		return nil, errors.New("hawkbit: no state file")
	}
	c := &Client{cfg: cfg, u: u, pollNow: make(chan struct{}, 1)}
	if cfg.Token != "" {
		c.auth = AuthHeader(cfg.TokenType, cfg.Token)
	}
	c.base = strings.TrimRight(cfg.Server, "/") + "/" + url.PathEscape(cfg.Tenant) + "/controller/v1/" + url.PathEscape(cfg.ControllerID)
	c.hc = &http.Client{
		Transport: &authTransport{base: cfg.Transport, origin: origin(su), auth: c.auth},
		Timeout:   2 * time.Minute,
	}
	if c.auth != "" && cfg.Credentials != nil {
		// Artifacts come through the engine's normal download path, which
		// adds this only for URLs under the server's origin (each redirect
		// hop decided again).
		if err := cfg.Credentials.Add(strings.TrimRight(cfg.Server, "/"), []string{"Authorization: " + c.auth}); err != nil {
			return nil, fmt.Errorf("hawkbit: registering the token for %s: %w", fetch.RedactURL(cfg.Server), err)
		}
	}
	c.info.Server = cfg.Server
	return c, nil
}

// Info returns the client's state.
func (c *Client) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// PollNow makes the running client poll at once (otactl poll, D-Bus Poll).
func (c *Client) PollNow() {
	select {
	case c.pollNow <- struct{}{}:
	default: // a poll is already due
	}
}

func (c *Client) note(fn func(i *Info)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.info)
}

func (c *Client) setAction(a *fleet.Action) {
	c.act = a
	c.note(func(i *Info) {
		i.Action, i.Phase = "", ""
		if a != nil {
			i.Action, i.Phase = a.ID, string(a.Phase)
			if a.Phase == fleet.PhaseFinal && a.Outcome != nil {
				i.Phase = "final:" + a.Outcome.Kind
				if a.Owed() {
					i.Phase += " (not yet reported)"
				}
			}
		}
	})
}

// save stores the current action; the caller takes its next step only if
// this succeeded.
func (c *Client) save(a *fleet.Action) error {
	a.Updated = c.cfg.Clock.Now()
	if err := c.cfg.Store.Save(a); err != nil {
		c.cfg.Log(slog.LevelError, "hawkbit: saving the action", "error", err)
		return err
	}
	c.setAction(a)
	return nil
}

// Run polls the server until ctx ends. It first settles an action a
// previous run left (a restart or power cut at any point), then polls at
// the server's interval, handling engine events in between.
func (c *Client) Run(ctx context.Context) error {
	events, stop := c.u.Subscribe()
	defer stop()
	a, err := c.cfg.Store.Load()
	if err != nil {
		// A torn record cannot happen (atomic writes); a corrupt one is
		// kept for inspection and a new action starts from the server.
		c.cfg.Log(slog.LevelError, "hawkbit: action record unreadable; starting afresh", "error", err)
	}
	c.setAction(a)
	c.restore(ctx)
	for {
		wait := c.poll(ctx)
		next := c.cfg.Clock.Now().Add(wait)
		c.note(func(i *Info) { i.NextPoll = next })
		timer := c.cfg.Clock.After(wait)
	idle:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer:
				break idle
			case <-c.pollNow:
				break idle
			case ev, ok := <-events:
				if !ok {
					return errors.New("hawkbit: engine event stream ended")
				}
				c.onEvent(ctx, ev)
			}
		}
	}
}

// poll is one round: owed result, poll, attributes, cancel, deployment.
// It returns how long to wait for the next one.
func (c *Client) poll(ctx context.Context) time.Duration {
	c.deliverOwed(ctx)
	cb, err := c.getBase(ctx)
	now := c.cfg.Clock.Now()
	if err != nil {
		if ctx.Err() == nil {
			c.failures++
			c.cfg.Log(slog.LevelWarn, "hawkbit: poll failed", "error", err, "failures", c.failures)
			c.note(func(i *Info) { i.LastError = err.Error() })
		}
		return c.backoff()
	}
	c.failures = 0
	c.note(func(i *Info) { i.LastPoll, i.LastError = now, "" })
	sleep, err := ParseSleep(cb.Config.Polling.Sleep)
	if err != nil {
		sleep = c.cfg.PollMax
	}
	c.sendAttributes(ctx, cb)
	if l, ok := cb.Links[LinkCancel]; ok {
		c.handleCancel(ctx, l.Href)
	}
	if l, ok := cb.Links[LinkDeployment]; ok {
		c.handleDeployment(ctx, l.Href)
	}
	c.settle(ctx)
	return c.jitter(min(max(sleep, c.cfg.PollMin), c.cfg.PollMax))
}

// jitter shortens d by up to a tenth, so a fleet that booted together
// spreads out; never below poll-min.
func (c *Client) jitter(d time.Duration) time.Duration {
	j := d - time.Duration(c.cfg.Jitter()*float64(d)/10)
	return max(j, min(c.cfg.PollMin, d))
}

// backoff doubles from poll-min per consecutive failure up to poll-max.
func (c *Client) backoff() time.Duration {
	d := c.cfg.PollMin
	for i := 1; i < c.failures && d < c.cfg.PollMax; i++ {
		d *= 2
	}
	return c.jitter(min(d, c.cfg.PollMax))
}

// getBase polls the controller base, with If-None-Match when the server
// sent an ETag; a 304 reuses the last answer.
func (c *Client) getBase(ctx context.Context) (*ControllerBase, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base, nil)
	if err != nil {
		return nil, fmt.Errorf("hawkbit: %w", err)
	}
	req.Header.Set("Accept", "application/hal+json")
	if c.etag != "" && c.last != nil {
		req.Header.Set("If-None-Match", c.etag)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, netErr("poll", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		if c.last != nil {
			return c.last, nil
		}
		return nil, errors.New("hawkbit: poll: 304 without an earlier answer")
	case http.StatusOK:
	default:
		return nil, statusErr("poll", resp)
	}
	var cb ControllerBase
	if err := decode(resp.Body, &cb); err != nil {
		return nil, fmt.Errorf("hawkbit: poll: %w", err)
	}
	c.last, c.etag = &cb, resp.Header.Get("ETag")
	return &cb, nil
}

// attributes are the configData entries: what the server needs to target
// a rollout, plus the configured extras.
func (c *Client) attributes() map[string]string {
	st := c.u.Status()
	m := map[string]string{
		"compatible":   st.Compatible,
		"version":      st.Version,
		"booted_slot":  st.BootSlot,
		"otad_version": c.cfg.OtadVersion,
	}
	for _, kv := range c.cfg.Attributes {
		m[kv[0]] = kv[1]
	}
	return m
}

// sendAttributes PUTs configData on first contact (of this process), when
// they changed, and whenever the server asks (configData link).
func (c *Client) sendAttributes(ctx context.Context, cb *ControllerBase) {
	attrs := c.attributes()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range attrs {
			if !yield(k) {
				return
			}
		}
	})
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, attrs[k])
	}
	sum := hex.EncodeToString(h.Sum(nil))
	_, asked := cb.Links[LinkConfigData]
	if !asked && sum == c.attrsSent {
		return
	}
	code, err := c.send(ctx, http.MethodPut, c.base+"/configData", ConfigData{Mode: "merge", Data: attrs})
	if err != nil || code/100 != 2 {
		c.cfg.Log(slog.LevelWarn, "hawkbit: sending attributes", "error", err, "status", code)
		return
	}
	c.attrsSent = sum
}

// send makes one JSON request and returns the status.
func (c *Client) send(ctx context.Context, method, u string, body any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("hawkbit: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("hawkbit: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/hal+json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, netErr(method, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxJSON))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// getJSON GETs a link the server gave, resolved against the server URL.
func (c *Client) getJSON(ctx context.Context, href string, out any) (int, error) {
	u, err := c.resolve(href)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("hawkbit: %w", err)
	}
	req.Header.Set("Accept", "application/hal+json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, netErr("GET", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, statusErr("GET", resp)
	}
	return resp.StatusCode, decode(resp.Body, out)
}

func (c *Client) resolve(href string) (string, error) {
	base, err := url.Parse(c.cfg.Server)
	if err != nil {
		return "", fmt.Errorf("hawkbit: %w", err)
	}
	u, err := base.Parse(href)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", errors.New("hawkbit: server sent a malformed link")
	}
	return u.String(), nil
}

func decode(r io.Reader, out any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxJSON+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSON {
		return errors.New("answer too large")
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("malformed answer: %w", err)
	}
	return nil
}

// netErr drops the URL from a transport error (its query could carry
// something the server put there).
func netErr(what string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("hawkbit: %s: %w", what, err)
}

// statusErr names the status, never the body.
func statusErr(what string, resp *http.Response) error {
	msg := fmt.Sprintf("hawkbit: %s: server answered %d", what, resp.StatusCode)
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg += "; check token-file, token-type, tenant and controller-id (or the client certificate)"
	case http.StatusNotFound:
		msg += "; check server and tenant"
	}
	return errors.New(msg)
}
