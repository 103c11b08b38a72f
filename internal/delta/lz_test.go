package delta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// lzPair is a pair where new content is old (incompressible) content
// reordered in short pieces with edits. (bsdiff's matches still code it
// better than LZ windows do: where LZ wins is measured on the corpus's
// major pairs, TestCorpusPairs.)
func lzPair() (old, nw []byte) {
	r := rand.New(rand.NewPCG(3, 4))
	old = randBytes(r, 1<<20)
	for len(nw) < 1<<20 {
		at := r.IntN(len(old) - 600)
		piece := bytes.Clone(old[at : at+24+r.IntN(40)])
		piece[r.IntN(len(piece))] ^= 0x20
		nw = append(nw, piece...)
	}
	return old, nw
}

func lzCoders(t *testing.T) map[string]LZCoder {
	c := map[string]LZCoder{"builtin": BuiltinLZ{}}
	if p, err := exec.LookPath("zstd"); err == nil {
		c["zstd program"] = &ZstdCommand{Path: p, Level: 19}
	} else {
		t.Log("no zstd program on PATH: only the built-in coder is tested")
	}
	return c
}

func TestLZWindowsRoundTrip(t *testing.T) {
	old, nw := lzPair()
	for name, c := range lzCoders(t) {
		t.Run(name, func(t *testing.T) {
			o := GenOptions{LZ: c, WindowSize: 256 << 10}
			forced := o
			forced.lzAlways = true
			fst := roundTrip(t, old, nw, forced)
			if fst.LZWindows == 0 {
				t.Fatalf("forced: %d of %d windows LZ", fst.LZWindows, fst.Windows)
			}
			plain := roundTrip(t, old, nw, GenOptions{NoLZ: true, WindowSize: 256 << 10})
			chosen := roundTrip(t, old, nw, o)
			t.Logf("patch without LZ %d, forced LZ %d, chosen %d (%d of %d windows LZ)",
				plain.PatchSize, fst.PatchSize, chosen.PatchSize, chosen.LZWindows, chosen.Windows)
			if chosen.PatchSize > plain.PatchSize {
				t.Errorf("with LZ windows %d bytes, larger than without (%d)", chosen.PatchSize, plain.PatchSize)
			}
		})
	}
}

// Every synthetic pair still round-trips with every window LZ-coded:
// empty images, zero runs, trimmed-source rules and window cuts included.
func TestLZWindowsSyntheticPairs(t *testing.T) {
	for name, p := range syntheticPairs() {
		switch name {
		case "random", "sparse edits":
			continue // slow with LZ on every window, and nothing the others lack
		case "shifted", "larger", "identical", "deleted":
			if raceOn {
				continue // the race detector makes these minutes; the rest cover the same paths
			}
		}
		t.Run(name, func(t *testing.T) {
			roundTrip(t, p[0], p[1], GenOptions{LZ: BuiltinLZ{}, lzAlways: true, WindowSize: 256 << 10})
		})
	}
}

// A patch of LZ windows against a differing source is refused before
// anything is written (TestLZDictionaryBlocksInTable shows the dictionary
// blocks themselves are in the table).
func TestLZDictionaryInSourceTable(t *testing.T) {
	old, nw := lzPair()
	patch, st := genPatch(t, old, nw, GenOptions{LZ: BuiltinLZ{}, lzAlways: true, WindowSize: 256 << 10})
	if st.LZWindows == 0 {
		t.Fatal("no LZ window")
	}
	bad := bytes.Clone(old)
	for i := 0; i < len(bad); i += SourceBlock {
		bad[i] ^= 1
	}
	var dst recorder
	err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(bad), &dst)
	if !errors.Is(err, ErrSourceMismatch) || dst.Len() != 0 {
		t.Fatalf("err %v after %d bytes", err, dst.Len())
	}
}

// lzPatch returns a patch of two LZ windows and its decoded body.
func lzPatch(t *testing.T) (old, nw, patch, body []byte, h *Header) {
	old, nw = lzPair()
	nw = nw[:512<<10]
	patch, _ = genPatch(t, old, nw, GenOptions{LZ: BuiltinLZ{}, lzAlways: true, WindowSize: 256 << 10})
	h, err := ReadHeader(bytes.NewReader(patch))
	if err != nil {
		t.Fatal(err)
	}
	return old, nw, patch, decodeBody(t, patch), h
}

func TestLZMalformedRefused(t *testing.T) {
	old, _, _, body, h := lzPatch(t)
	tableEnd := sourceTableEnd(t, body)
	cases := map[string]func(b []byte) []byte{
		"frame length over the window": func(b []byte) []byte {
			return rewriteFirstFrameLen(t, b, tableEnd, 4<<20)
		},
		"frame bytes flipped": func(b []byte) []byte {
			at := firstFrameAt(t, b, tableEnd)
			b[at+100] ^= 0xff
			return b
		},
		"previous output named in the first window": func(b []byte) []byte {
			return rewriteFirstPrev(t, b, tableEnd, 1)
		},
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			buf.Write(h.marshal())
			writeBody(t, &buf, mut(bytes.Clone(body)), int(h.ZstdWindow))
			var dst recorder
			err := Apply(context.Background(), bytes.NewReader(buf.Bytes()), bytes.NewReader(old), &dst)
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrOutputHash) {
				t.Fatalf("err = %v", err)
			}
			if dst.Len() != 0 {
				t.Fatalf("%d bytes written before %v", dst.Len(), err)
			}
		})
	}
	// A header that allows no LZ dictionary refuses a window that names one.
	h2 := *h
	h2.LZDict = 0
	var buf bytes.Buffer
	buf.Write(h2.marshal())
	writeBody(t, &buf, body, int(h.ZstdWindow))
	if err := Apply(context.Background(), bytes.NewReader(buf.Bytes()), bytes.NewReader(old), &recorder{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("LZDict 0: err = %v", err)
	}
	// And the header's cap is checked.
	h2.LZDict = MaxLZDict + 1
	if _, err := ReadHeader(bytes.NewReader(h2.marshal())); !errors.Is(err, ErrMalformed) {
		t.Fatalf("LZDict over the cap: err = %v", err)
	}
}

// sourceTableEnd parses the source table at the start of body and returns
// where the first window starts.
func sourceTableEnd(t *testing.T, body []byte) int {
	t.Helper()
	r := bytes.NewReader(body)
	n, _ := binary.ReadUvarint(r)
	for c := uint64(0); c < n; c++ {
		runs, _ := binary.ReadUvarint(r)
		for i := uint64(0); i < 2*runs; i++ {
			binary.ReadUvarint(r)
		}
		r.Seek(4, 1)
	}
	return len(body) - r.Len()
}

// firstWindowParts returns the offsets of window 0's control section and
// its length.
func firstWindowParts(t *testing.T, body []byte, at int) (ctrlAt, ctrlLen int) {
	t.Helper()
	r := bytes.NewReader(body[at:])
	binary.ReadUvarint(r)
	cl, _ := binary.ReadUvarint(r)
	ctrlAt = at + (len(body[at:]) - r.Len()) + 32
	if body[ctrlAt+1] != opLZ {
		t.Fatalf("window 0 is not an LZ window (op %d)", body[ctrlAt+1])
	}
	return ctrlAt, int(cl)
}

func firstFrameAt(t *testing.T, body []byte, at int) int {
	ctrlAt, cl := firstWindowParts(t, body, at)
	_, k := binary.Uvarint(body[ctrlAt+cl:])
	return ctrlAt + cl + k
}

// rewriteFirstFrameLen replaces window 0's frame length field.
func rewriteFirstFrameLen(t *testing.T, body []byte, at int, n uint64) []byte {
	ctrlAt, cl := firstWindowParts(t, body, at)
	_, k := binary.Uvarint(body[ctrlAt+cl:])
	out := append(bytes.Clone(body[:ctrlAt+cl]), binary.AppendUvarint(nil, n)...)
	return append(out, body[ctrlAt+cl+k:]...)
}

// rewriteFirstPrev replaces window 0's previous-output length (the last
// varint of its control section) and the control length with it.
func rewriteFirstPrev(t *testing.T, body []byte, at int, p int64) []byte {
	ctrlAt, cl := firstWindowParts(t, body, at)
	ctrl := body[ctrlAt : ctrlAt+cl]
	if ctrl[len(ctrl)-1] != 0 {
		t.Fatalf("window 0 names %d previous bytes", ctrl[len(ctrl)-1])
	}
	nc := append(bytes.Clone(ctrl[:len(ctrl)-1]), binary.AppendVarint(nil, p)...)
	r := bytes.NewReader(body[at:])
	ol, _ := binary.ReadUvarint(r)
	hdr := binary.AppendUvarint(nil, ol)
	hdr = binary.AppendUvarint(hdr, uint64(len(nc)))
	out := append(bytes.Clone(body[:at]), hdr...)
	out = append(out, body[ctrlAt-32:ctrlAt]...)
	out = append(out, nc...)
	return append(out, body[ctrlAt+cl:]...)
}

// The source table lists the blocks LZ dictionaries read, even those no
// COPY or ADD touches, so a source differing there is refused up front.
func TestLZDictionaryBlocksInTable(t *testing.T) {
	old := make([]byte, 10*SourceBlock)
	var buf bytes.Buffer
	got := writeSourceTable(&buf, old, nil, []extent{{off: 3*SourceBlock + 10, n: 5000}})
	if got != 2*SourceBlock {
		t.Fatalf("table covers %d bytes, want blocks 3 and 4", got)
	}
	r := bytes.NewReader(buf.Bytes())
	chunks, _ := binary.ReadUvarint(r)
	runs, _ := binary.ReadUvarint(r)
	gap, _ := binary.ReadUvarint(r)
	count, _ := binary.ReadUvarint(r)
	if chunks != 1 || runs != 1 || gap != 3 || count != 2 {
		t.Fatalf("table: %d chunks, %d runs, gap %d, count %d; want 1, 1, 3, 2", chunks, runs, gap, count)
	}
}

// repeatPair is a pair whose new image repeats, near its end, content that
// first appears earlier in the new image and nowhere in the old one: what
// only a dictionary reading the new image back can match.
func repeatPair() (old, nw []byte) {
	r := rand.New(rand.NewPCG(5, 6))
	old = randBytes(r, 512<<10)
	fresh := randBytes(r, 256<<10)
	nw = append(nw, fresh...)
	nw = append(nw, old[:512<<10]...)
	again := bytes.Clone(fresh)
	for i := 0; i < len(again); i += 4096 {
		again[i] ^= 0x55
	}
	return old, append(nw, again...)
}

// The dictionary is mapped from the two slots (files here) and reads back
// what earlier windows wrote; the same patch applies where nothing can be
// mapped (a slot in memory), and a patch that reads back is refused up
// front where there is nothing to read back from.
func TestLZDictionaryReadsBackTheWrittenSlot(t *testing.T) {
	old, nw := repeatPair()
	patch, st := genPatch(t, old, nw, GenOptions{LZ: BuiltinLZ{}, lzAlways: true, WindowSize: 256 << 10})
	h, err := ReadHeader(bytes.NewReader(patch))
	if err != nil {
		t.Fatal(err)
	}
	if h.Flags&FlagReadsNew == 0 || st.LZWindows == 0 {
		t.Fatalf("flags %#x, %d LZ windows: the repeated content was not matched from the new image", h.Flags, st.LZWindows)
	}
	dir := t.TempDir()
	oldF := filepath.Join(dir, "a")
	if err := os.WriteFile(oldF, old, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(oldF)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tgt, err := os.OpenFile(filepath.Join(dir, "b"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	var as ApplyStats
	syncs := 0
	a := &Applier{Target: tgt, Sync: func() error { syncs++; return tgt.Sync() }, Stats: &as}
	if err := a.Apply(context.Background(), bytes.NewReader(patch), src, tgt); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "b"))
	if err != nil || !bytes.Equal(got, nw) {
		t.Fatalf("mapped apply made a different image (%v)", err)
	}
	if as.LZReadBack == 0 || syncs == 0 || (os.Getpagesize() == SourceBlock && !as.LZMapped) {
		t.Fatalf("read back %d bytes after %d syncs, mapped %v", as.LZReadBack, syncs, as.LZMapped)
	}
	var mem recorder
	var cs ApplyStats
	if err := (&Applier{Stats: &cs}).Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), &mem); err != nil || !bytes.Equal(mem.Bytes(), nw) {
		t.Fatalf("copied dictionaries: %v", err)
	}
	if cs.LZMapped || cs.LZReadBack != as.LZReadBack {
		t.Fatalf("in memory: mapped %v, read back %d (files: %d)", cs.LZMapped, cs.LZReadBack, as.LZReadBack)
	}
	var plain bytes.Buffer
	err = Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), &plain)
	if err == nil || plain.Len() != 0 {
		t.Fatalf("no target to read back: err %v after %d bytes", err, plain.Len())
	}
}

// A new-image extent must lie in what earlier windows wrote: one that
// reaches into the window being made is malformed, before anything of that
// window is written.
func TestLZNewExtentPastWrittenRefused(t *testing.T) {
	w := &windowApplier{h: &Header{OldSize: 1 << 20, LZDict: 1 << 20, Flags: FlagReadsNew, WindowSize: 1 << 16}, newOff: 8192}
	w.lz.view = &dictView{}
	for _, tc := range []struct {
		name string
		off  int64
		n    int64
	}{{"past the written part", 4096, 8192}, {"not on a block", 100, 4096}, {"partial block", 0, 100}} {
		offs := binary.AppendVarint(nil, 0) // no old extents
		offs = binary.AppendVarint(offs, 1)
		offs = binary.AppendVarint(offs, tc.off)
		offs = binary.AppendVarint(offs, tc.n)
		offs = binary.AppendVarint(offs, 0)
		if _, err := w.lzExtents(0, &offs); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	ok := binary.AppendVarint(nil, 0)
	ok = binary.AppendVarint(ok, 1)
	ok = binary.AppendVarint(ok, 4096)
	ok = binary.AppendVarint(ok, 4096)
	ok = binary.AppendVarint(ok, 0)
	if _, err := w.lzExtents(0, &ok); err != nil || len(w.newExt) != 1 {
		t.Fatalf("a written block refused: %v", err)
	}
}

// What bundle create --delta-unmapped asks for: no read-back, dictionaries
// a device that cannot map its slots may copy. Such a patch applies with
// neither a target nor mappable slots.
func TestLZUnmappedOptions(t *testing.T) {
	old, nw := repeatPair()
	patch, st := genPatch(t, old, nw, GenOptions{LZ: BuiltinLZ{}, lzAlways: true, WindowSize: 256 << 10, LZDict: MaxLZDictCopy, LZNewDict: -1})
	h, err := ReadHeader(bytes.NewReader(patch))
	if err != nil {
		t.Fatal(err)
	}
	if st.LZWindows == 0 || h.Flags != 0 || h.LZDict > MaxLZDictCopy {
		t.Fatalf("%d LZ windows, flags %#x, LZDict %d", st.LZWindows, h.Flags, h.LZDict)
	}
	var out bytes.Buffer // not an io.ReaderAt: nothing to read back
	if err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), &out); err != nil || !bytes.Equal(out.Bytes(), nw) {
		t.Fatalf("apply without read-back: %v", err)
	}
}

// syncSlot is a slot whose written bytes are readable only after Sync, as
// with a writer that buffers (slot's fdWriter keeps a chunk in memory).
type syncSlot struct{ visible, pending []byte }

func (s *syncSlot) Write(p []byte) (int, error) {
	s.pending = append(s.pending, p...)
	return len(p), nil
}
func (s *syncSlot) Sync() error {
	s.visible, s.pending = append(s.visible, s.pending...), nil
	return nil
}
func (s *syncSlot) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(s.visible)) {
		return 0, io.ErrUnexpectedEOF
	}
	return copy(p, s.visible[off:]), nil
}

// Apply reads back only what a Sync made readable: with a buffering writer
// every window whose dictionary reaches past the last Sync syncs first.
func TestLZReadBackSyncsBufferedWrites(t *testing.T) {
	// Windows of 128 KiB: F1 F2 F1' F3 F2' F4 F3' F5 F4' ..., each F' an
	// edited copy of the fresh F two windows back, so the windows that read
	// back alternate with ones that do not, and a later one reaches past
	// what an earlier read-back synced.
	r := rand.New(rand.NewPCG(7, 8))
	old := randBytes(r, 256<<10)
	const w = 128 << 10
	fresh := [][]byte{randBytes(r, w), randBytes(r, w)}
	nw := append(bytes.Clone(fresh[0]), fresh[1]...)
	for i := 0; i < 6; i++ {
		again := bytes.Clone(fresh[i])
		for j := 0; j < w; j += 4096 {
			again[j] ^= 0x5a
		}
		f := randBytes(r, w)
		fresh = append(fresh, f)
		nw = append(append(nw, again...), f...)
	}
	patch, _ := genPatch(t, old, nw, GenOptions{LZ: BuiltinLZ{}, lzAlways: true, WindowSize: w})
	var s syncSlot
	var st ApplyStats
	a := &Applier{Target: &s, Sync: s.Sync, Stats: &st}
	if err := a.Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), &s); err != nil {
		t.Fatalf("apply: %v (read back %d bytes)", err, st.LZReadBack)
	}
	s.Sync()
	if !bytes.Equal(s.visible, nw) || st.LZReadBack == 0 {
		t.Fatalf("output differs or nothing read back (%d bytes)", st.LZReadBack)
	}
}

// One call codes several windows with one dictionary, and every frame
// decodes with that dictionary as Apply decodes it (raw content, id 0),
// also when the dictionary starts like a structured zstd dictionary, which
// the program's -D would read as one.
func TestLZCoderGroups(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	base := randBytes(r, 256<<10)
	srcs := [][]byte{
		append(bytes.Clone(base[1000:60000]), randBytes(r, 5000)...),
		bytes.Clone(base[100000:180000]),
		append(randBytes(r, 3000), base[200000:250000]...),
	}
	for name, c := range lzCoders(t) {
		for _, magic := range []bool{false, true} {
			dict := bytes.Clone(base)
			if magic {
				copy(dict, zstdDictMagic)
			}
			frames, err := c.EncodeLZ(context.Background(), dict, srcs)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(frames) != len(srcs) {
				t.Fatalf("%s: %d frames for %d windows", name, len(frames), len(srcs))
			}
			var lz lzState
			for i, f := range frames {
				if len(f) > len(srcs[i])/4 {
					t.Errorf("%s, magic %v: frame %d is %d bytes for %d: the dictionary was not used", name, magic, i, len(f), len(srcs[i]))
				}
				if lz.dec == nil {
					d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
					if err != nil {
						t.Fatal(err)
					}
					defer d.Close()
					lz.dec = d
				}
				got := make([]byte, len(srcs[i]))
				if err := lz.decodeFrame(f, dict, got); err != nil || !bytes.Equal(got, srcs[i]) {
					t.Fatalf("%s, magic %v: frame %d does not decode to its window (%v)", name, magic, i, err)
				}
			}
		}
	}
}

// Windows sharing a dictionary round-trip: no previous output in their
// dictionaries, new extents only before the group's first window.
func TestLZGroupRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	old := randBytes(r, 512<<10)
	unit := randBytes(r, 96<<10) // new content that recurs in the new image
	var nw []byte
	for len(nw) < 1<<20 {
		at := r.IntN(len(old) - 70000)
		nw = append(nw, old[at:at+40000+r.IntN(30000)]...)
		nw = append(nw, unit[:32<<10+r.IntN(64<<10)]...)
	}
	for name, c := range lzCoders(t) {
		t.Run(name, func(t *testing.T) {
			for _, g := range []int{1, 3} {
				if g == 1 && raceOn {
					continue // the race detector makes this slow; other tests cover single windows
				}
				st := roundTrip(t, old, nw, GenOptions{LZ: c, lzAlways: true, LZGroup: g, WindowSize: 256 << 10})
				if st.LZWindows != st.Windows {
					t.Errorf("group %d: %d of %d windows LZ", g, st.LZWindows, st.Windows)
				}
				t.Logf("group %d: patch %d bytes", g, st.PatchSize)
			}
		})
	}
}

// countingLZ is a coder that is not the built-in one (so marginal windows
// get the pre-trial) and counts what it is asked to code.
type countingLZ struct{ n int }

func (c *countingLZ) String() string { return "counting" }
func (c *countingLZ) EncodeLZ(ctx context.Context, dict []byte, srcs [][]byte) ([][]byte, error) {
	c.n += len(srcs)
	return BuiltinLZ{}.EncodeLZ(ctx, dict, srcs)
}

// A marginal window goes to the coder only when the built-in encoder's
// frame is under preTrialMax times its operations' estimate; other windows
// always do, and with the built-in coder nothing is pre-tried.
func TestLZPreTrial(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	dict := randBytes(r, 256<<10)
	inDict := bytes.Clone(dict[1000:65000]) // codes to a few hundred bytes
	fresh := randBytes(r, 64000)            // codes to about its size
	ws := []*win{{start: 0}, {start: 1}, {start: 2}, {start: 3}}
	srcs := [][]byte{inDict, fresh, fresh, inDict}
	est := []int{5000, 5000, 5000, 5000}
	marginal := []bool{true, true, false, false}
	c := &countingLZ{}
	got, gotSrcs, gotEst := preTrial(context.Background(), dict, ws, srcs, est, marginal, &GenOptions{LZ: c})
	if len(got) != 3 || got[0] != ws[0] || got[1] != ws[2] || got[2] != ws[3] || len(gotSrcs) != 3 || len(gotEst) != 3 {
		t.Fatalf("kept windows %v, want 0, 2 and 3", got)
	}
	if !bytes.Equal(gotSrcs[1], fresh) || gotEst[1] != 5000 {
		t.Fatal("sources or estimates out of step with the windows kept")
	}
	got, _, _ = preTrial(context.Background(), dict, ws, srcs, est, marginal, &GenOptions{LZ: BuiltinLZ{}})
	if len(got) != 4 {
		t.Fatalf("built-in coder: %d windows kept, want all 4", len(got))
	}
	if c.n != 0 {
		t.Fatal("the pre-trial called the coder")
	}
}
