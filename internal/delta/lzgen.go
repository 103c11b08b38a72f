package delta

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// LZCoder compresses src as one zstd frame that uses dict as a raw
// dictionary (dictionary id 0, what `zstd --patch-from` writes), for Apply
// to decode with the same old bytes. The frame must not declare a window
// over MaxLZWindow.
type LZCoder interface {
	EncodeLZ(ctx context.Context, src, dict []byte) ([]byte, error)
	String() string
}

// DefaultLZ is the zstd program at level 19 when one is on PATH: its
// optimal parser codes executables about 15 % smaller than the pure-Go
// encoder (measured on Go's arm64 toolchain 1.25 → 1.26), which decides the
// size of a major-release delta. Without it, the pure-Go encoder.
func DefaultLZ() LZCoder {
	if p, err := exec.LookPath("zstd"); err == nil {
		return &ZstdCommand{Path: p, Level: 19}
	}
	return BuiltinLZ{}
}

// ZstdCommand runs the zstd program (the reference implementation) on the
// build host.
type ZstdCommand struct {
	Path  string
	Level int // 1..22
}

func (z *ZstdCommand) String() string { return "zstd -" + strconv.Itoa(z.Level) }

// EncodeLZ writes src and dict to a private temporary directory and runs
// zstd --patch-from on them; the frame carries no checksum (Apply checks
// every window against the SHA-256 chain) and a window of at most
// MaxLZWindow.
func (z *ZstdCommand) EncodeLZ(ctx context.Context, src, dict []byte) ([]byte, error) {
	if z.Level < 1 || z.Level > 22 {
		return nil, fmt.Errorf("delta: zstd level %d", z.Level)
	}
	if len(src)+len(dict) > MaxLZWindow {
		return nil, fmt.Errorf("delta: LZ input of %d bytes over the %d-byte window", len(src)+len(dict), MaxLZWindow)
	}
	dir, err := os.MkdirTemp("", "otad-lz-")
	if err != nil {
		return nil, fmt.Errorf("delta: LZ: %w", err)
	}
	defer os.RemoveAll(dir)
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	if err := os.WriteFile(in, src, 0o600); err != nil {
		return nil, fmt.Errorf("delta: LZ: %w", err)
	}
	args := []string{"-q", "-f", "--no-check", "--single-thread", "-" + strconv.Itoa(z.Level)}
	if z.Level > 19 {
		args = append(args, "--ultra")
	}
	if len(dict) > 0 {
		d := filepath.Join(dir, "dict")
		if err := os.WriteFile(d, dict, 0o600); err != nil {
			return nil, fmt.Errorf("delta: LZ: %w", err)
		}
		args = append(args, "--patch-from="+d)
	}
	args = append(args, in, "-o", out)
	cmd := exec.CommandContext(ctx, z.Path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("delta: LZ: %s: %w: %s", z, err, firstLine(stderr.Bytes()))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("delta: LZ: %w", err)
	}
	return b, nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(b[:min(len(b), 200)])
}

// BuiltinLZ is klauspost/compress's zstd encoder at its best level with a
// raw dictionary: no outside program, weaker coding.
type BuiltinLZ struct{}

func (BuiltinLZ) String() string { return "built-in zstd" }

func (BuiltinLZ) EncodeLZ(_ context.Context, src, dict []byte) ([]byte, error) {
	o := []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(MaxLZWindow), zstd.WithEncoderCRC(false)}
	if len(dict) > 0 {
		o = append(o, zstd.WithEncoderDictRaw(0, dict))
	}
	e, err := zstd.NewWriter(nil, o...)
	if err != nil {
		return nil, fmt.Errorf("delta: zstd: %w", err)
	}
	defer e.Close()
	return e.EncodeAll(src, nil), nil
}

// chooseLZ codes windows as LZ frames where that is smaller. Candidates are
// windows with at least an eighth of ADD or LIT bytes whose operations do
// not already code at 8:1 or better; of those, the LZMaxWindows whose
// operations cost the most (estimated by compressing them as the body's
// encoder would, after the previous window) are LZ-coded, and a frame is
// kept where it is smaller than that estimate. The cap bounds generation
// time: a window costs the zstd program 1–2 CPU-seconds.
func chooseLZ(ctx context.Context, old, nw []byte, zeroBlock []bool, wins []*win, opts *GenOptions, st *Stats) error {
	st.LZCoder = opts.LZ.String()
	type job struct {
		wn, prev *win
		opsSize  int
	}
	var cand []*job
	for i, wn := range wins {
		// len(diff) is already bzip2-coded and lit at most its raw size:
		// under an eighth of the changed bytes, the operations code at 8:1
		// or better whatever the body's encoder does, so no estimate.
		if wn.changed > 0 && (wn.changed >= (wn.end-wn.start)/8 && (len(wn.diff)+len(wn.lit))*8 >= wn.changed || opts.lzAlways) {
			j := &job{wn: wn}
			if i > 0 {
				j.prev = wins[i-1]
			}
			cand = append(cand, j)
		}
	}
	err := parallel(ctx, opts.LZWorkers, len(cand), func(i int, est *zstd.Encoder) error {
		cand[i].opsSize = opsEstimate(cand[i].wn, cand[i].prev, est)
		return nil
	})
	if err != nil {
		return err
	}
	keep := cand[:0]
	for _, j := range cand {
		if j.opsSize*8 >= j.wn.changed || opts.lzAlways {
			keep = append(keep, j)
		}
	}
	sort.SliceStable(keep, func(a, b int) bool { return keep[a].opsSize > keep[b].opsSize })
	limit := opts.LZMaxWindows
	if limit == 0 {
		limit = max(16, 32*int((int64(len(nw))+(256<<20)-1)/(256<<20)))
	}
	if len(keep) > limit && !opts.lzAlways {
		keep = keep[:limit]
	}
	if len(keep) == 0 {
		return nil
	}
	st.LZTried = len(keep)
	idx := newKmerIndex(old, zeroBlock, false)
	var newIdx *kmerIndex
	if opts.LZNewDict > 0 {
		newIdx = newKmerIndex(nw, nil, true)
	}
	err = parallel(ctx, opts.LZWorkers, len(keep), func(i int, _ *zstd.Encoder) error {
		j := keep[i]
		return tryLZ(ctx, old, nw, zeroBlock, idx, newIdx, j.wn, j.prev, j.opsSize, opts)
	})
	if err != nil {
		return err
	}
	for _, wn := range wins {
		if wn.lzFrame != nil {
			st.LZWindows++
			st.LZBytes += int64(wn.end - wn.start)
		}
	}
	return nil
}

// parallel runs fn(i) for i in [0, n) on up to workers goroutines, each with
// its own estimating encoder, and returns the first error (the rest are
// cancelled through ctx's child).
func parallel(ctx context.Context, workers, n int, fn func(i int, est *zstd.Encoder) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			est, err := newEstimator()
			if err == nil {
				defer est.Close()
			}
			for err == nil && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err = fn(i, est)
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func newEstimator() (*zstd.Encoder, error) {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(2<<20), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("delta: zstd: %w", err)
	}
	return e, nil
}

// opsEstimate is what wn's operations add to the body: the body's encoder
// has the previous window in its history, so that is compressed before it
// and only the growth counts.
func opsEstimate(wn, prev *win, est *zstd.Encoder) int {
	ctrl, _ := wn.ctrlOps(0)
	var ctx0 []byte
	if prev != nil {
		pc, _ := prev.ctrlOps(0)
		ctx0 = bytes.Join([][]byte{pc, prev.diff, prev.lit}, nil)
		ctx0 = ctx0[max(0, len(ctx0)-512<<10):]
	}
	base := 0
	if len(ctx0) > 0 {
		base = len(est.EncodeAll(ctx0, nil))
	}
	return len(est.EncodeAll(bytes.Join([][]byte{ctx0, ctrl, wn.diff, wn.lit}, nil), nil)) - base
}

// tryLZ codes wn as an LZ frame and keeps it if it is smaller than the
// operations' estimated cost. The dictionary is laid out as Apply builds
// it: the previous window's output, then old extents, then new-image
// extents.
func tryLZ(ctx context.Context, old, nw []byte, zeroBlock []bool, idx, newIdx *kmerIndex, wn, prev *win, opsSize int, opts *GenOptions) error {
	ext := dictExtents(wn, nw, len(old), zeroBlock, idx, opts.LZDict, opts.LZMargin)
	lzPrev, before := 0, wn.start
	var dict []byte
	if prev != nil {
		lzPrev, before = prev.end-prev.start, prev.start
		dict = append(dict, nw[prev.start:prev.end]...)
	}
	for _, e := range ext {
		dict = append(dict, old[e.off:e.off+e.n]...)
	}
	var newExt []extent
	if newIdx != nil {
		newExt = newExtents(nw[wn.start:wn.end], before, newIdx, opts.LZNewDict)
		for _, e := range newExt {
			dict = append(dict, nw[e.off:e.off+e.n]...)
		}
	}
	frame, err := opts.LZ.EncodeLZ(ctx, nw[wn.start:wn.end], dict)
	if err != nil {
		return err
	}
	if lzSize := len(frame) + 8 + 20*(len(ext)+len(newExt)); lzSize < opsSize || opts.lzAlways {
		wn.lzFrame, wn.lzExt, wn.lzNew, wn.lzPrev = frame, ext, newExt, lzPrev
	}
	return nil
}
