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

// LZCoder compresses each of srcs as one zstd frame that uses dict as a raw
// dictionary (dictionary id 0, what `zstd --patch-from` writes), for Apply
// to decode with the same slot bytes. Windows that share a dictionary are
// coded in one call, so the coder builds its match structures over the
// dictionary once: at level 19 that is most of a window's cost (about
// 5 CPU-seconds for a 20 MiB dictionary, against 0.7 for the 1 MiB window
// itself). No frame may declare a window over MaxLZWindow.
type LZCoder interface {
	EncodeLZ(ctx context.Context, dict []byte, srcs [][]byte) ([][]byte, error)
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

// zstdDictMagic starts a structured zstd dictionary. The program's -D
// takes a file that starts so as one (entropy tables, then content), which
// is not what Apply decodes with; such a dictionary goes through
// --patch-from, which always takes raw content, one window per run.
var zstdDictMagic = []byte{0x37, 0xA4, 0x30, 0xEC}

// EncodeLZ writes dict and srcs to a private temporary directory and runs
// the zstd program once over all of srcs with dict loaded once (-D); the
// frames carry no checksum (Apply checks every window against the SHA-256
// chain). -D with a raw-content file codes what --patch-from codes, byte
// for byte (checked with zstd 1.5.4), but --patch-from reloads the
// dictionary for every input.
func (z *ZstdCommand) EncodeLZ(ctx context.Context, dict []byte, srcs [][]byte) ([][]byte, error) {
	if z.Level < 1 || z.Level > 22 {
		return nil, fmt.Errorf("delta: zstd level %d", z.Level)
	}
	for _, src := range srcs {
		if len(src)+len(dict) > MaxLZWindow {
			return nil, fmt.Errorf("delta: LZ input of %d bytes over the %d-byte window", len(src)+len(dict), MaxLZWindow)
		}
	}
	if len(srcs) == 0 {
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "otad-lz-")
	if err != nil {
		return nil, fmt.Errorf("delta: LZ: %w", err)
	}
	defer os.RemoveAll(dir)
	args := []string{"-q", "-f", "--no-check", "--single-thread", "-" + strconv.Itoa(z.Level)}
	if z.Level > 19 {
		args = append(args, "--ultra")
	}
	var runs [][]string // argument tails, one zstd run each
	ins := make([]string, len(srcs))
	for i, src := range srcs {
		ins[i] = filepath.Join(dir, "in"+strconv.Itoa(i))
		if err := os.WriteFile(ins[i], src, 0o600); err != nil {
			return nil, fmt.Errorf("delta: LZ: %w", err)
		}
	}
	if len(dict) > 0 {
		d := filepath.Join(dir, "dict")
		if err := os.WriteFile(d, dict, 0o600); err != nil {
			return nil, fmt.Errorf("delta: LZ: %w", err)
		}
		if bytes.HasPrefix(dict, zstdDictMagic) {
			for _, in := range ins {
				runs = append(runs, []string{"--patch-from=" + d, in})
			}
		} else {
			runs = append(runs, append([]string{"-D", d}, ins...))
		}
	} else {
		runs = append(runs, ins)
	}
	for _, tail := range runs {
		cmd := exec.CommandContext(ctx, z.Path, append(append([]string(nil), args...), tail...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("delta: LZ: %s: %w: %s", z, err, firstLine(stderr.Bytes()))
		}
	}
	out := make([][]byte, len(srcs))
	for i, in := range ins {
		if out[i], err = os.ReadFile(in + ".zst"); err != nil {
			return nil, fmt.Errorf("delta: LZ: %w", err)
		}
	}
	return out, nil
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

func (BuiltinLZ) EncodeLZ(_ context.Context, dict []byte, srcs [][]byte) ([][]byte, error) {
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
	out := make([][]byte, len(srcs))
	for i, src := range srcs {
		out[i] = e.EncodeAll(src, nil)
	}
	return out, nil
}

// chooseLZ codes windows as LZ frames where that is smaller. Candidates are
// windows with at least an eighth of ADD or LIT bytes whose operations do
// not already code at 8:1 or better (estimated by compressing them as the
// body's encoder would, after the previous window); of those, the
// LZMaxWindows whose operations cost the most are LZ-coded, and a frame is
// kept where it is smaller than that estimate. The cap bounds generation
// time: a window costs the zstd program 2–8 CPU-seconds, mostly loading
// its dictionary. Marginal windows, whose operations cost under a quarter
// of their changed bytes, come after all others for the cap and go to the
// coder only past a pre-trial (preTrial): of the twelve listed on the
// corpus's minor root file system and executable pairs (0.13–0.21), one
// won (15,858 B of the minor root file system patch) and the other eleven
// made frames 1.05–1.86 times their operations, while trying them all took
// that pair's generation from 31 to 108 CPU-seconds (40 with the
// pre-trial, which keeps the winner).
func chooseLZ(ctx context.Context, old, nw []byte, zeroBlock []bool, wins []*win, opts *GenOptions, st *Stats) error {
	st.LZCoder = opts.LZ.String()
	type job struct {
		wn, prev *win
		opsSize  int
		marginal bool // operations under a quarter of the changed bytes
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
			j.marginal = j.opsSize*4 < j.wn.changed && !opts.lzAlways
			keep = append(keep, j)
		}
	}
	// Marginal windows only take what the cap leaves.
	sort.SliceStable(keep, func(a, b int) bool {
		if keep[a].marginal != keep[b].marginal {
			return !keep[a].marginal
		}
		return keep[a].opsSize > keep[b].opsSize
	})
	limit := opts.LZMaxWindows
	if limit == 0 {
		limit = max(16, 64*int((int64(len(nw))+(256<<20)-1)/(256<<20)))
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
	// Groups of windows near each other in the image share one dictionary,
	// coded in one call: they draw on the same old files more often than
	// not, and the coder's cost is mostly the dictionary.
	sort.Slice(keep, func(a, b int) bool { return keep[a].wn.start < keep[b].wn.start })
	var groups [][]*job
	for i := 0; i < len(keep); i += opts.LZGroup {
		groups = append(groups, keep[i:min(i+opts.LZGroup, len(keep))])
	}
	err = parallel(ctx, opts.LZWorkers, len(groups), func(i int, _ *zstd.Encoder) error {
		g := groups[i]
		ws := make([]*win, len(g))
		est := make([]int, len(g))
		marginal := make([]bool, len(g))
		for k, j := range g {
			ws[k], est[k], marginal[k] = j.wn, j.opsSize, j.marginal
		}
		var prev *win
		if len(g) == 1 {
			prev = g[0].prev
		}
		return tryLZ(ctx, old, nw, zeroBlock, idx, newIdx, ws, prev, est, marginal, opts)
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

// preTrial drops the marginal windows whose frame from the built-in
// encoder is not under preTrialMax times their operations' estimate. The
// zstd program's level 19 codes 0.79–0.89 times the built-in encoder's
// size with the same dictionary (19 windows of the corpus); the marginal
// windows that lost had built-in frames 1.23–2.20 times their estimate,
// the one that won 0.52, and the built-in encoder costs a fraction of
// the program's dictionary load. Without the zstd program the built-in
// encoder is the coder, and nothing is dropped.
func preTrial(ctx context.Context, dict []byte, ws []*win, srcs [][]byte, est []int, marginal []bool, opts *GenOptions) ([]*win, [][]byte, []int) {
	if _, builtin := opts.LZ.(BuiltinLZ); builtin {
		return ws, srcs, est
	}
	var try [][]byte
	for k := range ws {
		if marginal[k] {
			try = append(try, srcs[k])
		}
	}
	if len(try) == 0 {
		return ws, srcs, est
	}
	pre, err := BuiltinLZ{}.EncodeLZ(ctx, dict, try)
	if err != nil {
		return ws, srcs, est // let the real coder decide
	}
	var ws2 []*win
	var srcs2 [][]byte
	var est2 []int
	t := 0
	for k := range ws {
		if marginal[k] {
			t++
			if float64(len(pre[t-1])) >= preTrialMax*float64(est[k]) {
				continue
			}
		}
		ws2, srcs2, est2 = append(ws2, ws[k]), append(srcs2, srcs[k]), append(est2, est[k])
	}
	return ws2, srcs2, est2
}

// preTrialMax: see preTrial.
const preTrialMax = 1.15

// tryLZ codes the windows ws with one dictionary and keeps each frame that
// is smaller than its window's estimated operations (est). The dictionary
// is laid out as Apply builds it: the previous window's output (only for a
// window coded alone: prev), then old extents, then new-image extents
// before the first of ws.
func tryLZ(ctx context.Context, old, nw []byte, zeroBlock []bool, idx, newIdx *kmerIndex, ws []*win, prev *win, est []int, marginal []bool, opts *GenOptions) error {
	ext := dictExtents(ws, nw, len(old), zeroBlock, idx, opts.LZDict, opts.LZMargin)
	lzPrev, before := 0, ws[0].start
	var dict []byte
	if prev != nil {
		lzPrev, before = prev.end-prev.start, prev.start
		dict = append(dict, nw[prev.start:prev.end]...)
	}
	for _, e := range ext {
		dict = append(dict, old[e.off:e.off+e.n]...)
	}
	srcs := make([][]byte, len(ws))
	for k, wn := range ws {
		srcs[k] = nw[wn.start:wn.end]
	}
	var newExt []extent
	if newIdx != nil {
		newExt = newExtents(srcs, before, newIdx, opts.LZNewDict)
		for _, e := range newExt {
			dict = append(dict, nw[e.off:e.off+e.n]...)
		}
	}
	ws, srcs, est = preTrial(ctx, dict, ws, srcs, est, marginal, opts)
	if len(ws) == 0 {
		return nil
	}
	frames, err := opts.LZ.EncodeLZ(ctx, dict, srcs)
	if err != nil {
		return err
	}
	if len(frames) != len(ws) {
		return fmt.Errorf("delta: LZ: %s made %d frames for %d windows", opts.LZ, len(frames), len(ws))
	}
	for k, wn := range ws {
		if lzSize := len(frames[k]) + 8 + 20*(len(ext)+len(newExt)); lzSize < est[k] || opts.lzAlways {
			wn.lzFrame, wn.lzExt, wn.lzNew, wn.lzPrev = frames[k], ext, newExt, lzPrev
		}
	}
	return nil
}
