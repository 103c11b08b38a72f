// Command deltaapply applies a delta patch the way the device does: patch
// read sequentially, old image read with pread, new image written
// sequentially. It keeps the Go heap small (GOGC, memory limit) and reports
// its peak memory from /proc/self/status, for scripts/bench-delta.sh.
//
// deltaapply -floor SRC,NEW OLD OUT does everything apply must do on a pair
// except decoding the patch, as a floor for scripts/bench-delta.sh: read and
// CRC-32C SRC bytes of OLD (the source table check), read them again (the
// windows' extents), SHA-256 and write NEW bytes to OUT.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"runtime/debug"
	"strings"

	"github.com/otadev/otad/internal/delta"
)

func main() {
	report := flag.Bool("mem", false, "print VmHWM/RssAnon from /proc/self/status to stderr when done")
	stats := flag.Bool("stats", false, "print what was verified and hashed to stderr when done")
	floorSizes := flag.String("floor", "", "`SRC,NEW`: run the no-decoding floor over OLD, writing OUT, instead of a patch")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: deltaapply [-mem] [-stats] PATCH OLD NEW | deltaapply -floor SRC,NEW OLD OUT")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *floorSizes != "" {
		var srcN, newN int64
		if _, err := fmt.Sscanf(*floorSizes, "%d,%d", &srcN, &newN); err != nil || flag.NArg() != 2 {
			flag.Usage()
			os.Exit(2)
		}
		if err := floor(flag.Arg(0), flag.Arg(1), srcN, newN); err != nil {
			fmt.Fprintln(os.Stderr, "deltaapply:", err)
			os.Exit(1)
		}
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
		fmt.Fprintf(os.Stderr, "stats: %d windows; source %d bytes checked (CRC-32C); output %d bytes hashed (SHA-256, of which COPY %d, ZERO %d, LZ %d); LZ read back %d, dictionaries mapped %v\n",
			st.Windows, st.SourceBytes, st.HashedOutput, st.CopyBytes, st.ZeroBytes, st.LZBytes, st.LZReadBack, st.LZMapped)
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
	// Read and write: a patch may read back what it wrote (Applier.Target
	// defaults to dst).
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

// floor is apply without the patch: the source table check (read and
// CRC-32C srcN bytes), the windows' source reads (the same bytes again, in
// 1 MiB windows), the image SHA-256 and the write of newN bytes.
func floor(oldPath, outPath string, srcN, newN int64) error {
	src, err := os.Open(oldPath)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if srcN <= 0 || srcN > fi.Size() {
		return fmt.Errorf("floor: %d source bytes, %s has %d", srcN, oldPath, fi.Size())
	}
	dst, err := os.Create(outPath)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	tab := crc32.MakeTable(crc32.Castagnoli)
	var crc uint32
	for off := int64(0); off < srcN; {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), srcN-off)], off)
		if n == 0 {
			dst.Close()
			return fmt.Errorf("floor: read: %v", err)
		}
		crc = crc32.Update(crc, tab, buf[:n])
		off += int64(n)
	}
	h := sha256.New()
	for off := int64(0); off < newN; {
		b := buf[:min(int64(len(buf)), newN-off)]
		n, err := src.ReadAt(b, off%srcN)
		if n == 0 {
			dst.Close()
			return fmt.Errorf("floor: read: %v", err)
		}
		h.Write(b[:n])
		if _, err := dst.Write(b[:n]); err != nil {
			dst.Close()
			return err
		}
		off += int64(n)
	}
	fmt.Fprintf(os.Stderr, "floor: crc %08x sha256 %x\n", crc, h.Sum(nil)[:8])
	return dst.Close()
}
