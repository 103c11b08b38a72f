package update

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/delta"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
)

// writeDelta rebuilds the new image from the active slot and the verified
// patch stream. A delta write cannot resume mid-way (the patch is one
// stream), so it is journaled only at its start; an interrupted delta
// install rewrites from the start.
// sum is the manifest's image SHA-256, 32 bytes and not all zero (install
// checked it before touching anything).
func (e *Engine) writeDelta(ctx context.Context, b *opened, t slot.Target, w slot.Writer, rec *journal.Record, sum []byte) error {
	src, err := e.cfg.OpenReadOnly(e.cfg.Slots[rec.Active])
	if err != nil {
		return err
	}
	defer src.Close()
	cw := &countingWriter{w: w, progress: func(n int64) { e.progress(n, b.img.Size, "writing slot "+rec.Target+" (delta)") }}
	// The source was checked before anything was touched (checkDeltaSource
	// on the same bundle), so Apply does not read it a second time.
	// The slots themselves (not section readers over them) go to Apply so
	// that block and file slots can be mapped for LZ dictionaries; the
	// target is read back only where earlier windows wrote it, after Sync.
	a := &delta.Applier{NewSize: b.img.Size, MaxOldSize: src.Size(), SourceChecked: b.sourceChecked,
		Target: t, Sync: w.Sync}
	// Apply's check of the image it builds is what lets the slot settle the
	// read-back by comparing on write.
	copy(a.NewSHA256[:], sum)
	if err := a.Apply(ctx, b.br, src, cw); err != nil {
		return err
	}
	if cw.n != b.img.Size {
		return fmt.Errorf("update: delta produced %d bytes, manifest says %d", cw.n, b.img.Size)
	}
	if err := w.Sync(); err != nil {
		return err
	}
	return w.Close()
}

// deltaRefused is a delta install refused before anything was touched
// because the active slot does not hold the delta's source. Only this starts
// the fallback to a full bundle.
type deltaRefused struct {
	err   error
	image string // the image SHA-256 the delta makes: the fallback must make it too
}

func (e *deltaRefused) Error() string { return e.err.Error() }
func (e *deltaRefused) Unwrap() error { return e.err }

// checkDeltaSource refuses a delta whose source is not in the active slot,
// before anything is touched: first by the slot records, then by every
// check Apply would make before writing (verifySource). That read the
// start of the patch, so it returns the same bundle opened again, marked
// sourceChecked. Other bundles (and resumes) pass through unchanged. A
// refusal is a *deltaRefused, which starts the fallback to a full bundle.
func (e *Engine) checkDeltaSource(ctx context.Context, req *installReq, b *opened, active string, sum []byte) (*opened, error) {
	img := b.img
	if img.Encoding != bundle.EncodingDelta || req.resume != nil {
		return b, nil
	}
	if dl := img.Delta; dl != nil {
		if r, err := e.cfg.Journal.LoadSlot(active); err == nil && r.SHA256 != "" && r.SHA256 != dl.SourceSHA256 {
			return b, &deltaRefused{image: img.SHA256, err: fmt.Errorf("update: %w: delta bundle applies to image %.12s…, slot %s holds %.12s…; install the full bundle",
				delta.ErrSourceMismatch, dl.SourceSHA256, active, r.SHA256)}
		}
	}
	if err := e.verifySource(ctx, b, active, sum); err != nil {
		if errors.Is(err, delta.ErrSourceMismatch) {
			return b, &deltaRefused{image: img.SHA256, err: err}
		}
		return b, err
	}
	id := b.br.Identity()
	b.Close()
	nb, err := e.openBundle(ctx, req.source)
	if err != nil {
		return nil, err
	}
	if nb.br.Identity() != id {
		return nb, errors.New("update: bundle changed while reopening it")
	}
	nb.sourceChecked = true
	return nb, nil
}

// verifySource makes every check Apply would make before writing — the
// patch header against the manifest and the active slot's size, and the
// source table against the slot's bytes — reading the start of b's payload.
// It returns an error matching delta.ErrSourceMismatch when the active slot
// is not the image the patch was made from. Nothing is written.
func (e *Engine) verifySource(ctx context.Context, b *opened, active string, sum []byte) error {
	src, err := e.cfg.OpenReadOnly(e.cfg.Slots[active])
	if err != nil {
		return err
	}
	defer src.Close()
	e.setOp(OpVerifying, "checking the delta's source in slot "+active)
	a := &delta.Applier{NewSize: b.img.Size, MaxOldSize: src.Size()}
	copy(a.NewSHA256[:], sum)
	if err := a.VerifySource(ctx, b.br, io.NewSectionReader(src, 0, src.Size())); err != nil {
		return fmt.Errorf("slot %s: %w", active, err)
	}
	return nil
}

type countingWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.progress(c.n)
	return n, err
}
