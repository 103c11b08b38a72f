// Command fetchbench measures how fast a bundle streams through
// fetch.Open over loopback HTTP compared with fetch.Open on the same bytes
// as a local file, both into the same SHA-256 sink (what verification
// costs at least). bench/50-fetch.sh runs it; it prints a ratio, never a
// pass/fail verdict.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/otadev/otad/internal/fetch"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fetchbench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fetchbench", flag.ContinueOnError)
	sizeMiB := fs.Int("size", 256, "bundle size in MiB")
	dir := fs.String("dir", os.TempDir(), "directory for the test bundle")
	rounds := fs.Int("rounds", 5, "measurements per source")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	serve := fs.String("serve", "", "only serve this `file` on loopback: print its URL, run until stdin closes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *serve != "" {
		return serveFile(*serve, out)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	path := filepath.Join(*dir, "fetchbench.bundle")
	size := int64(*sizeMiB) << 20
	if err := writeRandom(path, size); err != nil {
		return err
	}
	defer os.Remove(path)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/bundle"

	ctx := context.Background()
	var local, remote []float64
	var localSum, remoteSum string
	// Interleave the two so drift on a shared machine hits both alike.
	for i := 0; i < *rounds; i++ {
		mbps, sum, err := measure(ctx, path, size)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		local, localSum = append(local, mbps), sum
		if mbps, sum, err = measure(ctx, url, size); err != nil {
			return fmt.Errorf("http: %w", err)
		}
		remote, remoteSum = append(remote, mbps), sum
	}
	if localSum != remoteSum {
		return fmt.Errorf("digests differ: local %s, http %s", localSum, remoteSum)
	}
	// Best of N is the least disturbed by other load on a shared machine;
	// the median is printed too so a noisy run is visible as such.
	lm, rm := median(local), median(remote)
	lb, rb := slices.Max(local), slices.Max(remote)
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	fmt.Fprintf(out, "fetch: %d MiB streamed into sha256, %d interleaved rounds each (load avg %s, %d CPUs)\n",
		*sizeMiB, *rounds, load, runtime.NumCPU())
	fmt.Fprintf(out, "  local file (baseline)  best %8.1f MB/s  median %8.1f MB/s\n", lb, lm)
	fmt.Fprintf(out, "  http over loopback     best %8.1f MB/s  median %8.1f MB/s\n", rb, rm)
	fmt.Fprintf(out, "  ratio http/local       best %8.2f       median %8.2f   (goal >= 0.90)\n", rb/lb, rm/lm)
	return nil
}

// measure streams src through fetch into SHA-256 and returns MB/s.
func measure(ctx context.Context, src string, size int64) (float64, string, error) {
	start := time.Now()
	s, err := fetch.Open(ctx, src, fetch.Options{})
	if err != nil {
		return 0, "", err
	}
	defer s.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, s, make([]byte, 256<<10))
	if err != nil {
		return 0, "", err
	}
	if n != size {
		return 0, "", fmt.Errorf("read %d bytes, want %d", n, size)
	}
	el := time.Since(start).Seconds()
	return float64(n) / 1e6 / el, fmt.Sprintf("%x", h.Sum(nil)), nil
}

func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	r := rand.NewChaCha8([32]byte{'o', 't', 'a', 'd'})
	if _, err := io.Copy(f, io.LimitReader(r, size)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// serveFile serves one file over loopback HTTP for another process (the
// install-from-URL bench) until stdin reaches EOF.
func serveFile(path string, out io.Writer) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Fprintf(out, "http://%s/%s\n", ln.Addr(), filepath.Base(path))
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}
