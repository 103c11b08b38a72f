// Command fleetbench is the load driver of `make bench-fleet`: N simulated
// devices, each with its own channel.Poller (the real poll, verify and
// accept code) and channel.Decide, poll a signed channel document served by
// nginx on 127.0.0.1 with the poll interval compressed; the engine is
// replaced by a recorder that marks a device as running the release it
// decided to install. The host tooling's functions publish the rollout
// stages 1 %, 10 % and 100 % one after another. It prints one table and
// exits non-zero if a stage's share is off by more than 0.5 points or not
// every device converged. Bounded: -max-duration ends it.
package main

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/channel"
)

const compatible = "fleet-bench-gw"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

type options struct {
	devices     int
	conns       int
	interval    time.Duration
	jitter      time.Duration
	nginxBin    string
	workers     int
	maxDuration time.Duration
	stageMax    time.Duration
}

// parseOptions reads the command line.
func parseOptions() (options, error) {
	var o options
	flag.IntVar(&o.devices, "devices", 100000, "simulated devices")
	flag.IntVar(&o.conns, "conns", 64, "concurrent polls (HTTP connections, kept alive)")
	flag.DurationVar(&o.interval, "interval", 4*time.Second, "poll interval (compressed; a device uses e.g. 1h)")
	flag.DurationVar(&o.jitter, "jitter", time.Second, "poll jitter (±)")
	flag.StringVar(&o.nginxBin, "nginx", "/usr/sbin/nginx", "nginx binary")
	flag.IntVar(&o.workers, "nginx-workers", 1, "nginx worker processes")
	flag.DurationVar(&o.maxDuration, "max-duration", 4*time.Minute, "stop (and fail) after this long")
	flag.DurationVar(&o.stageMax, "stage-max", 75*time.Second, "longest one rollout stage may take to be seen by every device")
	flag.Parse()
	if o.jitter >= o.interval {
		return o, errors.New("-jitter must be below -interval")
	}
	return o, nil
}

func run() error {
	o, err := parseOptions()
	if err != nil {
		return err
	}
	// SIGINT/SIGTERM end the run through ctx, so nginx is stopped and the
	// temporary directory removed on the way out.
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, o.maxDuration)
	defer cancel()

	dir, err := os.MkdirTemp("", "fleetbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pub, ch, ckr, err := publish(dir)
	if err != nil {
		return err
	}
	ng, err := startNginx(o.nginxBin, dir, pub, o.workers)
	if err != nil {
		return err
	}
	defer ng.stop()
	url := ng.base + channel.DocumentFile

	tr := &http.Transport{MaxConnsPerHost: o.conns, MaxIdleConnsPerHost: o.conns, IdleConnTimeout: time.Minute}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	// Everything the harness itself needs is allocated before the baseline,
	// so the heap difference is the devices' own state.
	s := newSim(o)
	runtime.GC()
	debug.FreeOSMemory()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	devs := newDevices(o.devices, url, client, ckr)
	s.devs = devs

	cpu0, err := nginxCPU(ng.pid)
	if err != nil {
		return err
	}
	start := time.Now()
	s.startWorkers(ctx)
	var stages []stageResult
	for _, pct := range []int{1, 10, 100} {
		if pct != 1 {
			if err := setStage(pub, pct, ch); err != nil {
				return err
			}
		}
		r, err := s.runStage(ctx, pct)
		if err != nil {
			return err
		}
		stages = append(stages, r)
	}
	elapsed := time.Since(start)
	s.stopWorkers()
	cpu1, err := nginxCPU(ng.pid)
	if err != nil {
		return err
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perDevice := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(o.devices)
	runtime.KeepAlive(devs)

	b200, b304, req, err := probeBytes(url)
	if err != nil {
		return err
	}
	return report(o, s, stages, elapsed, cpu1-cpu0, perDevice, b200, b304, req)
}

// newDevices makes n simulated devices on release 1.0, each polling url
// with its own state.
func newDevices(n int, url string, client *http.Client, ckr *bundle.Keyring) []device {
	devs := make([]device, n)
	for i := range devs {
		d := &devs[i]
		d.id = fmt.Sprintf("%032x", mrand.Uint64()) + strconv.Itoa(i)
		d.version = "1.0"
		d.p = channel.Poller{URL: url, Client: client, Keyring: ckr, Compatible: compatible, Store: &channel.MemStore{}}
	}
	return devs
}

// publish makes the keys, publishes the release under dir/pub at stage
// 1 %, and returns that directory, the channel key and the devices' keyring.
func publish(dir string) (pub string, ch *bundle.PrivateKey, ckr *bundle.Keyring, err error) {
	pub = filepath.Join(dir, "pub")
	rel, ch, ckr, err := keys()
	if err != nil {
		return "", nil, nil, err
	}
	if err := publishRelease(pub, dir, rel); err != nil {
		return "", nil, nil, err
	}
	if err := setStage(pub, 1, ch); err != nil {
		return "", nil, nil, err
	}
	return pub, ch, ckr, nil
}

func keys() (rel, ch *bundle.PrivateKey, ckr *bundle.Keyring, err error) {
	if rel, err = bundle.GenerateKey(bundle.AlgEd25519, "bench-release", "release", rand.Reader); err != nil {
		return
	}
	if ch, err = bundle.GenerateKey(bundle.AlgEd25519, "bench-channel", channel.RoleChannel, rand.Reader); err != nil {
		return
	}
	kr, err := bundle.NewKeyring(bundle.DefaultPolicy, rel.Public(), ch.Public())
	if err != nil {
		return
	}
	ckr, err = channel.Keyring(kr)
	return
}

// publishRelease makes a channel directory with one release (a small real
// bundle) through the host tooling's functions.
func publishRelease(pub, tmp string, rel *bundle.PrivateKey) error {
	img := make([]byte, 256<<10)
	rand.Read(img)
	var b bytes.Buffer
	if _, err := bundle.Create(context.Background(), &b, bundle.CreateOptions{Compatible: compatible, Version: "2.0",
		SecurityVersion: 1, TempDir: tmp}, []bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingRaw,
		Data: bytes.NewReader(img), Size: int64(len(img))}}, []*bundle.PrivateKey{rel}); err != nil {
		return err
	}
	path := filepath.Join(tmp, "update-2.0.otab")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return err
	}
	if err := channel.InitDir(pub, compatible, 24*time.Hour); err != nil {
		return err
	}
	d, err := channel.LoadDraft(pub)
	if err != nil {
		return err
	}
	if _, err := d.AddRelease(pub, channel.AddOptions{ID: "2.0", Bundle: path, Now: time.Now()}); err != nil {
		return err
	}
	return d.Save(pub)
}

// setStage widens the release to pct from now on and signs the next serial.
func setStage(pub string, pct int, ch *bundle.PrivateKey) error {
	d, err := channel.LoadDraft(pub)
	if err != nil {
		return err
	}
	r, err := d.Release("2.0")
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Second)
	if pct == 1 {
		r.Rollout = []channel.Stage{{Percent: 1, At: now}}
	} else {
		r.Rollout = append(r.Rollout, channel.Stage{Percent: float64(pct), At: now})
	}
	if err := d.Save(pub); err != nil {
		return err
	}
	_, err = channel.SignDir(pub, rand.Reader, time.Now(), ch)
	return err
}

// device is one simulated device: its poller state and what it runs.
type device struct {
	p       channel.Poller
	id      string
	version string
	image   string
	due     int64 // unix ns of the next poll
	stage   int32 // stage of the last counted polls
	polls   int32 // polls started after the current stage was published
	idx     int32
}

// schedule is a min-heap of device indices by due time.
type schedule struct {
	devs []device
	idx  []int32
}

func (h *schedule) Len() int           { return len(h.idx) }
func (h *schedule) Less(i, j int) bool { return h.devs[h.idx[i]].due < h.devs[h.idx[j]].due }
func (h *schedule) Swap(i, j int)      { h.idx[i], h.idx[j] = h.idx[j], h.idx[i] }
func (h *schedule) Push(x any)         { h.idx = append(h.idx, x.(int32)) }
func (h *schedule) Pop() any           { n := len(h.idx) - 1; x := h.idx[n]; h.idx = h.idx[:n]; return x }

type sim struct {
	o    options
	devs []device
	mu   sync.Mutex
	h    *schedule

	stage      atomic.Int32
	stageStart atomic.Int64
	wg         sync.WaitGroup
	stop       chan struct{}

	lat200, lat304 [][]time.Duration // per worker
	n200, n304     atomic.Int64
	errs           atomic.Int64
	lastErr        atomic.Value
	installs       atomic.Int64
}

func newSim(o options) *sim {
	s := &sim{o: o, stop: make(chan struct{})}
	s.lat200 = make([][]time.Duration, o.conns)
	s.lat304 = make([][]time.Duration, o.conns)
	for i := range s.lat200 {
		s.lat200[i] = make([]time.Duration, 0, 3*o.devices/o.conns+1024)
		s.lat304[i] = make([]time.Duration, 0, 8*o.devices/o.conns+1024)
	}
	return s
}

func (s *sim) startWorkers(ctx context.Context) {
	s.h = &schedule{devs: s.devs, idx: make([]int32, 0, len(s.devs))}
	now := time.Now().UnixNano()
	for i := range s.devs {
		// A fleet that booted together: first polls spread over the jitter.
		s.devs[i].due = now + mrand.Int64N(int64(s.o.interval))
		s.devs[i].idx = int32(i)
		s.h.idx = append(s.h.idx, int32(i))
	}
	heap.Init(s.h)
	for w := 0; w < s.o.conns; w++ {
		s.wg.Add(1)
		go s.worker(ctx, w)
	}
}

func (s *sim) stopWorkers() { close(s.stop); s.wg.Wait() }

func (s *sim) worker(ctx context.Context, w int) {
	defer s.wg.Done()
	rng := mrand.New(mrand.NewPCG(uint64(w), 42))
	for {
		select {
		case <-s.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		s.mu.Lock()
		i := s.h.idx[0]
		d := &s.devs[i]
		wait := time.Duration(d.due - time.Now().UnixNano())
		if wait > 0 {
			s.mu.Unlock()
			time.Sleep(min(wait, 2*time.Millisecond))
			continue
		}
		heap.Pop(s.h)
		s.mu.Unlock()

		inst, fresh := s.poll(ctx, w, d, rng)

		next := time.Now().UnixNano() + int64(s.o.interval) + rng.Int64N(2*int64(s.o.jitter)+1) - int64(s.o.jitter)
		s.mu.Lock()
		if inst != nil { // the recorder: the device now runs the release
			d.version, d.image = inst.Version, inst.ImageSHA256
		}
		if fresh >= 0 {
			if d.stage != fresh {
				d.stage, d.polls = fresh, 0
			}
			d.polls++
		}
		d.due = next
		heap.Push(s.h, i)
		s.mu.Unlock()
	}
}

// poll is one device's poll: the real Fetch (conditional GET, verify,
// parse, accept) and Decide; the recorder "installs" by switching the
// device to the release.
func (s *sim) poll(ctx context.Context, w int, d *device, _ *mrand.Rand) (installed *channel.Release, freshStage int32) {
	s.mu.Lock()
	stage, stageStart := s.stage.Load(), s.stageStart.Load()
	version, image := d.version, d.image
	s.mu.Unlock()
	freshStage = -1
	started := time.Now()
	f, err := d.p.Fetch(ctx, started)
	lat := time.Since(started)
	if err != nil {
		if ctx.Err() == nil {
			s.errs.Add(1)
			s.lastErr.Store(err.Error())
		}
		return nil, -1
	}
	if started.UnixNano() >= stageStart {
		freshStage = stage
	}
	switch f.Status {
	case http.StatusOK:
		s.n200.Add(1)
		s.lat200[w] = append(s.lat200[w], lat)
	case http.StatusNotModified:
		s.n304.Add(1)
		s.lat304[w] = append(s.lat304[w], lat)
	}
	dec := channel.Decide(f.Doc, channel.Device{ID: d.id, Version: version, ImageSHA256: image, Now: started})
	if dec.Action == channel.Install {
		s.installs.Add(1)
		return dec.Release, freshStage
	}
	return nil, freshStage
}

type stageResult struct {
	pct      int
	updated  int
	took     time.Duration
	complete bool
}

// runStage publishes nothing itself (the caller signed the stage) and waits
// until every device polled at least twice after it (the new document,
// then a 304), or stage-max.
func (s *sim) runStage(ctx context.Context, pct int) (stageResult, error) {
	s.mu.Lock()
	s.stage.Store(int32(pct))
	s.stageStart.Store(time.Now().UnixNano())
	s.mu.Unlock()
	t0 := time.Now()
	r := stageResult{pct: pct}
	deadline := time.After(s.o.stageMax)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("stage %d %%: %w", pct, ctx.Err())
		case <-deadline:
			break wait
		case <-tick.C:
			if s.allPolled(int32(pct), 2) {
				r.complete = true
				break wait
			}
		}
	}
	r.took = time.Since(t0)
	s.mu.Lock()
	for i := range s.devs {
		if s.devs[i].version == "2.0" {
			r.updated++
		}
	}
	s.mu.Unlock()
	return r, nil
}

func (s *sim) allPolled(stage int32, n int32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.devs {
		if s.devs[i].stage != stage || s.devs[i].polls < n {
			return false
		}
	}
	return true
}

func percentiles(parts [][]time.Duration) (p50, p99 time.Duration, n int) {
	var all []time.Duration
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all) == 0 {
		return 0, 0, 0
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all[len(all)*50/100], all[len(all)*99/100], len(all)
}

type nginxProc struct {
	base string
	pid  int
	done chan struct{}
}

func startNginx(bin, dir, root string, workers int) (*nginxProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root root;"
	}
	conf := fmt.Sprintf(`daemon off;
%s
worker_processes %d;
pid %s/nginx.pid;
error_log %[3]s/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[3]s/body; proxy_temp_path %[3]s/proxy; fastcgi_temp_path %[3]s/fcgi;
  uwsgi_temp_path %[3]s/uwsgi; scgi_temp_path %[3]s/scgi;
  types { application/octet-stream otab; text/plain json; }
  keepalive_requests 1000000;
  server_tokens off;
  server { listen 127.0.0.1:%[4]d backlog=4096; root %[5]s; }
}
`, user, workers, dir, port, root)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", cf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	n := &nginxProc{base: fmt.Sprintf("http://127.0.0.1:%d/", port), pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { cmd.Wait(); close(n.done) }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return n, nil
		}
		select {
		case <-n.done:
			return nil, errors.New("nginx exited at start (see its error log above)")
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			n.stop()
			return nil, errors.New("nginx did not listen within 10 s")
		}
	}
}

func (n *nginxProc) stop() {
	syscall.Kill(n.pid, syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(n.pid, syscall.SIGKILL)
		<-n.done
	}
}

// nginxCPU sums user+system CPU seconds of the nginx master and its
// workers from /proc/PID/stat (fields 14 and 15, clock ticks of 1/100 s).
func nginxCPU(master int) (float64, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command is in parentheses and may hold spaces: split after it.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != master && ppid != master {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + st
	}
	return float64(ticks) / 100, nil
}

// probeBytes measures one response of each kind on the wire (status line,
// headers and body) on a fresh connection, and the conditional request.
func probeBytes(url string) (b200, b304, req int64, err error) {
	var in, out atomic.Int64
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countConn{Conn: c, in: &in, out: &out}, nil
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	get := func(etag string) (string, int64, int64, error) {
		in.Store(0)
		out.Store(0)
		r, _ := http.NewRequest(http.MethodGet, url, nil)
		if etag != "" {
			r.Header.Set("If-None-Match", etag)
		}
		resp, err := c.Do(r)
		if err != nil {
			return "", 0, 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("ETag"), in.Load(), out.Load(), nil
	}
	etag, b200, _, err := get("")
	if err != nil {
		return
	}
	_, b304, req, err = get(etag)
	return
}

type countConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func report(o options, s *sim, stages []stageResult, elapsed time.Duration, cpu, perDevice float64, b200, b304, req int64) error {
	n200, n304, errs := s.n200.Load(), s.n304.Load(), s.errs.Load()
	polls := n200 + n304
	p50, p99, _ := percentiles(append(append([][]time.Duration{}, s.lat200...), s.lat304...))
	p50a, p99a, _ := percentiles(s.lat200)
	p50b, p99b, _ := percentiles(s.lat304)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
	fmt.Printf("fleet: %d devices, real channel.Poller + Decide each, engine = recorder; nginx (%d worker) on 127.0.0.1;\n", o.devices, o.workers)
	fmt.Printf("       poll interval %s ± %s (compressed), %d concurrent keep-alive connections, %d CPUs\n", o.interval, o.jitter, o.conns, runtime.NumCPU())
	fmt.Printf("| metric | value |\n|---|---|\n")
	fmt.Printf("| polls | %d in %.1f s (200: %d, 304: %d, errors: %d) |\n", polls, elapsed.Seconds(), n200, n304, errs)
	fmt.Printf("| sustained polls/s | %.0f |\n", float64(polls)/elapsed.Seconds())
	fmt.Printf("| latency p50 / p99, all polls | %s / %s |\n", ms(p50), ms(p99))
	fmt.Printf("| latency p50 / p99, 200 (fetch + verify + parse + accept) | %s / %s |\n", ms(p50a), ms(p99a))
	fmt.Printf("| latency p50 / p99, 304 | %s / %s |\n", ms(p50b), ms(p99b))
	fmt.Printf("| bytes per poll, 200 (response on the wire) | %d |\n", b200)
	fmt.Printf("| bytes per poll, 304 (response on the wire; request %d) | %d |\n", req, b304)
	fmt.Printf("| nginx CPU seconds per million polls | %.1f (%.2f s for %d polls) |\n", cpu/float64(polls)*1e6, cpu, polls)
	fmt.Printf("| poller memory per device (heap, document held) | %.0f bytes |\n", perDevice)
	fmt.Printf("\n| stage | devices updated | share | off by | seen by all in |\n|---|---|---|---|---|\n")
	ok := errs == 0
	for _, r := range stages {
		share := 100 * float64(r.updated) / float64(o.devices)
		off := share - float64(r.pct)
		verdict := "ok"
		if off > 0.5 || off < -0.5 || !r.complete {
			verdict, ok = "FAIL", false
		}
		if r.pct == 100 && r.updated != o.devices {
			verdict, ok = fmt.Sprintf("FAIL: %d not converged", o.devices-r.updated), false
		}
		fmt.Printf("| %d %% | %d | %.2f %% | %+.2f points %s | %.1f s |\n", r.pct, r.updated, share, off, verdict, r.took.Seconds())
	}
	if errs > 0 {
		fmt.Printf("last poll error: %v\n", s.lastErr.Load())
	}
	if !ok {
		return errors.New("a stage is off by more than 0.5 points, not every device saw it, or polls failed")
	}
	return nil
}
