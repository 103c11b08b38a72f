// Command deltaapply applies a delta patch the way the device does: patch
// read sequentially, old image read with pread, new image written
// sequentially. It keeps the Go heap small (GOGC, memory limit) and reports
// its peak memory from /proc/self/status, for scripts/bench-delta.sh.
//
// deltaapply -sha256-cpu N measures the hashing floor instead: the CPU time
// of SHA-256 over N bytes (the amount -stats reports for a patch), as the
// mean of several passes.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/otadev/otad/internal/delta"
)

func main() {
	report := flag.Bool("mem", false, "print VmHWM/RssAnon from /proc/self/status to stderr when done")
	stats := flag.Bool("stats", false, "print what was verified and hashed to stderr when done")
	shaCPU := flag.Int64("sha256-cpu", -1, "print the CPU milliseconds SHA-256 takes over `N` bytes, and exit")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: deltaapply [-mem] [-stats] PATCH OLD NEW | deltaapply -sha256-cpu N")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *shaCPU >= 0 {
		fmt.Printf("%.2f\n", shaMillis(*shaCPU))
		return
	}
	if flag.NArg() != 3 {
		flag.Usage()
		os.Exit(2)
	}
	// The working set is a few fixed buffers plus one bzip2 block state per
	// window. GOGC 50 with a 12 MiB soft limit keeps the peak RSS near 8 MiB;
	// tighter settings (GOGC 20, 8 MiB) cost ~50% more CPU in GC for ~2 MiB.
	debug.SetGCPercent(50)
	debug.SetMemoryLimit(12 << 20)
	var st delta.ApplyStats
	if err := run(flag.Arg(0), flag.Arg(1), flag.Arg(2), &st); err != nil {
		fmt.Fprintln(os.Stderr, "deltaapply:", err)
		os.Exit(1)
	}
	if *stats {
		fmt.Fprintf(os.Stderr, "stats: %d windows; hashed %d bytes (source extents %d + ADD/LIT output %d; COPY %d + ZERO %d output bytes not hashed again)\n",
			st.Windows, st.SourceBytes+st.HashedOutput, st.SourceBytes, st.HashedOutput, st.CopyBytes, st.ZeroBytes)
	}
	if *report {
		fmt.Fprintln(os.Stderr, memLine())
	}
}

func run(patchPath, oldPath, newPath string, st *delta.ApplyStats) error {
	p, err := os.Open(patchPath)
	if err != nil {
		return err
	}
	defer p.Close()
	src, err := os.Open(oldPath)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(newPath)
	if err != nil {
		return err
	}
	a := &delta.Applier{Stats: st}
	if err := a.Apply(context.Background(), bufio.NewReaderSize(p, 64<<10), src, dst); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// memLine returns the peak and anonymous resident set sizes.
func memLine() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "mem: " + err.Error()
	}
	var f []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmHWM:", "RssAnon:", "VmRSS:"} {
			if strings.HasPrefix(l, k) {
				f = append(f, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return "mem: " + strings.Join(f, ", ")
}

// shaMillis returns the process CPU time of hashing n bytes with SHA-256 in
// 1 MiB writes, the mean of passes taking at least half a second together.
func shaMillis(n int64) float64 {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 31)
	}
	h := sha256.New()
	start := cpuTime()
	passes := 0
	for passes < 3 || cpuTime()-start < 500*time.Millisecond {
		h.Reset()
		for left := n; left > 0; left -= int64(len(buf)) {
			h.Write(buf[:min(left, int64(len(buf)))])
		}
		h.Sum(nil)
		passes++
	}
	return float64(cpuTime()-start) / float64(time.Millisecond) / float64(passes)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
