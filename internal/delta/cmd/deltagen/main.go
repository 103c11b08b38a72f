// Command deltagen writes a delta patch from OLD to NEW (build host side of
// otad's delta images; `otad bundle create --delta-from` does the same inside
// a bundle). Used by scripts/bench-delta.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/otadev/otad/internal/delta"
)

func main() {
	window := flag.Int("window", 0, "output bytes per window (default 1 MiB)")
	zwin := flag.Int("zstd-window", 0, "zstd window (default 2 MiB)")
	copyRun := flag.Int("copy-run", 0, "unchanged run inside a match made a COPY (default 4096, -1 never)")
	full := flag.Int64("full-size", -1, "full-image zstd size for the fallback check (0: measure, -1: skip)")
	lzDict := flag.Int("lz-dict", 0, "most old-image bytes an LZ window uses as its dictionary (default 8 MiB)")
	lzMargin := flag.Int("lz-margin", 0, "dictionary reach around the extents a window reads (default 256 KiB)")
	lzLevel := flag.Int("lz-level", 0, "zstd program level for LZ windows (default 19)")
	lzNew := flag.Int("lz-new", 0, "most new-image bytes before a window its dictionary reads back (default 4 MiB, -1 none)")
	lzMax := flag.Int("lz-max", 0, "most windows LZ-coded (default 64 per 256 MiB, at least 16)")
	lzGroup := flag.Int("lz-group", 0, "LZ windows sharing one dictionary (default 1: one each, after the previous window)")
	sparseZstd := flag.Bool("diff-zstd", false, "leave sparse diff tokens to the body's zstd instead of bzip2")
	noLZ := flag.Bool("no-lz", false, "no LZ windows")
	builtin := flag.Bool("lz-builtin", false, "code LZ windows with the built-in encoder, not the zstd program")
	cpuProf := flag.String("cpuprofile", "", "write a CPU profile of the generation to `FILE`")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: deltagen [flags] OLD NEW PATCH")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 3 {
		flag.Usage()
		os.Exit(2)
	}
	opts := delta.GenOptions{WindowSize: *window, ZstdWindow: *zwin, FullSize: *full, CopyRun: *copyRun,
		NoLZ: *noLZ, LZDict: *lzDict, LZMargin: *lzMargin, LZMaxWindows: *lzMax, LZNewDict: *lzNew, LZGroup: *lzGroup}
	switch lz := delta.DefaultLZ().(type) {
	case *delta.ZstdCommand:
		if *lzLevel > 0 {
			lz.Level = *lzLevel
		}
		opts.LZ = lz
	}
	if *sparseZstd {
		opts.DiffCoding = delta.DiffSparseZstd
	}
	if *builtin {
		opts.LZ = delta.BuiltinLZ{}
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "deltagen:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "deltagen:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(flag.Arg(0), flag.Arg(1), flag.Arg(2), opts); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "deltagen:", err)
		os.Exit(1)
	}
}

func run(oldPath, newPath, patchPath string, opts delta.GenOptions) error {
	oldF, err := os.Open(oldPath)
	if err != nil {
		return err
	}
	defer oldF.Close()
	newF, err := os.Open(newPath)
	if err != nil {
		return err
	}
	defer newF.Close()
	oi, err := oldF.Stat()
	if err != nil {
		return err
	}
	ni, err := newF.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(patchPath)
	if err != nil {
		return err
	}
	st, err := delta.Generate(context.Background(), oldF, oi.Size(), newF, ni.Size(), out, opts)
	fmt.Fprintf(os.Stderr, "deltagen: patch %d bytes (full zstd %d), %d windows; copy %d zero %d add %d literal %d; LZ (%s) %d of %d tried windows, %d bytes; source read %d; %v\n",
		st.PatchSize, st.FullSize, st.Windows, st.CopyBytes, st.ZeroBytes, st.AddBytes, st.LitBytes, st.LZCoder, st.LZWindows, st.LZTried, st.LZBytes, st.SourceBytes, st.Duration.Round(1e6))
	if errors.Is(err, delta.ErrDeltaNotSmaller) {
		out.Close()
		os.Remove(patchPath)
		return err
	}
	if err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
