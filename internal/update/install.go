package update

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
)

// RootfsClass is the only image class the engine installs.
const RootfsClass = "rootfs"

// errUnchanged ends an install with skip-unchanged set whose image is
// already the booted slot's.
var errUnchanged = errors.New("update: image already installed in the booted slot")

type installReq struct {
	tx            string
	source        string
	fallback      string // full bundle to install instead of a delta whose source does not match
	wantImage     string // a fallback install: the image SHA-256 the refused delta makes
	reboot        bool
	skipUnchanged bool
	// sourceOpts is the "source-options" install option: opaque to the
	// engine, handed to Config.OpenSource through the job's context.
	sourceOpts any
	resume     *journal.Record // non-nil: continue this interrupted install
}

// Install starts an install in the background and returns its transaction
// id. The ctx of the call only bounds this call; the install itself runs
// until it ends, Cancel is called or the engine's Start context ends.
// Options: "reboot" (bool, overrides the configured policy),
// "source-options" (any non-nil value, for in-process callers: handed to
// Config.OpenSource through the context, see SourceOptions; not journaled,
// so a resume after a restart opens the source without it),
// "skip-unchanged" (bool), "fallback" (string: a full bundle, path or URL,
// installed instead when source is a delta bundle whose source image is not
// in the active slot).
func (e *Engine) Install(ctx context.Context, source string, opts map[string]any) (string, error) {
	req, err := e.parseOpts(source, opts)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	jctx, err := e.begin(req.tx)
	if err != nil {
		return "", err
	}
	e.spawn(func() {
		defer e.end()
		_ = e.runInstall(jctx, req) // logged and reported inside
	})
	return req.tx, nil
}

// installNow is the synchronous form of Install for tests.
func (e *Engine) installNow(source string, opts map[string]any) (string, error) {
	req, err := e.parseOpts(source, opts)
	if err != nil {
		return "", err
	}
	jctx, err := e.begin(req.tx)
	if err != nil {
		return "", err
	}
	defer e.end()
	return req.tx, e.runInstall(jctx, req)
}

func (e *Engine) parseOpts(source string, opts map[string]any) (*installReq, error) {
	if source == "" {
		return nil, errors.New("update: empty source")
	}
	req := &installReq{source: source, reboot: e.cfg.AutoReboot}
	for k, v := range opts {
		if k == "source-options" {
			// In-process callers only (fleet clients, compat APIs): a D-Bus
			// variant never decodes to the wiring's options type.
			if v == nil {
				return nil, fmt.Errorf("update: option %q must not be nil", k)
			}
			req.sourceOpts = v
			continue
		}
		if k == "fallback" {
			s, ok := v.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("update: option %q must be a non-empty string", k)
			}
			req.fallback = s
			continue
		}
		b, ok := v.(bool)
		switch {
		case !ok:
			return nil, fmt.Errorf("update: option %q must be a boolean", k)
		case k == "reboot":
			req.reboot = b
		case k == "skip-unchanged":
			req.skipUnchanged = b
		default:
			return nil, fmt.Errorf("update: unknown install option %q", k)
		}
	}
	req.tx = e.newTx()
	return req, nil
}

// runInstall runs one install to its end and handles its outcome: the error
// is logged here, once, and reported as a completed event.
func (e *Engine) runInstall(ctx context.Context, req *installReq) error {
	log := e.logger(KeyTx, req.tx)
	if b := e.bootedSlot(); b != "" {
		log = log.with(KeySlot, other(b))
	}
	if req.sourceOpts != nil {
		ctx = WithSourceOptions(ctx, req.sourceOpts)
	}
	start := log.with(KeyEvent, EventInstallStarted, "source", redactSource(req.source))
	if req.resume != nil {
		start.with("resume", req.resume.Resumes).info("install resumed")
	} else {
		start.info("install started")
	}
	err := e.install(ctx, req)
	var refused *deltaRefused
	if errors.As(err, &refused) && req.fallback != "" && ctx.Err() == nil {
		// Refused before anything was touched. The full bundle goes through
		// every check of its own (signature, compatible, floor) and must
		// make the same image as the delta.
		log.withErr(err).with("fallback", redactSource(req.fallback)).warn("delta source mismatch; installing the full bundle instead")
		first := err
		req.source, req.fallback, req.wantImage = req.fallback, "", refused.image
		if err = e.install(ctx, req); err != nil {
			err = fmt.Errorf("%v; fallback %s: %w", first, req.source, err)
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errUnchanged):
		log.info("image already installed in the booted slot; nothing to do")
		e.setOp(OpIdle, "")
		e.emit(Event{Kind: "completed", Tx: req.tx, Message: "unchanged: image already installed"})
		return nil
	case ctx.Err() != nil && !e.canceledByUser():
		// Shutdown, not a failure: the journal still says "writing" and the
		// next start resumes from the last synced chunk.
		log.withErr(err).warn("install interrupted by shutdown; it resumes on the next start")
		return err
	}
	if e.canceledByUser() {
		err = fmt.Errorf("%w: %v", ErrCanceled, err)
		log.with(KeyEvent, EventInstallFailed, KeyReason, "canceled").warn("install canceled")
	} else {
		fail := log.withErr(err).with(KeyEvent, EventInstallFailed)
		// The version is known (and verified) once the journal records the
		// write; before that the bundle may not even be one.
		if rec, jerr := e.cfg.Journal.Load(); jerr == nil && rec.Tx == req.tx && rec.Bundle.Version != "" {
			fail = fail.with(KeyVersion, rec.Bundle.Version)
		}
		fail.error("install failed")
	}
	e.failInstall(req.tx, err)
	e.setLastError(err.Error())
	e.setOp(OpIdle, "")
	e.emit(Event{Kind: "completed", Tx: req.tx, Result: resultOf(err), Message: err.Error()})
	return err
}

// failInstall leaves the target slot bad and disarmed after a failed or
// canceled install that had reached the slot; the active slot is untouched.
func (e *Engine) failInstall(tx string, cause error) {
	rec, err := e.cfg.Journal.Load()
	if err != nil || rec.Tx != tx || (rec.State != journal.StateWriting && rec.State != journal.StateWritten) {
		return // never got to the slot: nothing on the device changed
	}
	log := e.logger(KeyTx, tx)
	p := e.protocol()
	if err := p.Disarm(e.bootname(rec.Active)); err != nil {
		log.withErr(err).error("disarming the failed target")
	}
	if err := e.cfg.Journal.UpdateSlot(rec.Target, func(s *journal.SlotRecord) {
		*s = journal.SlotRecord{Name: rec.Target, State: journal.SlotBad, Reason: cause.Error()}
	}); err != nil {
		log.withErr(err).error("recording the target slot bad")
	}
	rec.State, rec.LastError, rec.Updated = journal.StateFailed, cause.Error(), e.cfg.Clock.Now()
	if err := e.cfg.Journal.Save(rec); err != nil {
		log.withErr(err).error("recording the failed install")
	}
}

func (e *Engine) protocol() *boot.Protocol {
	return &boot.Protocol{Store: e.cfg.Env, BootLimit: e.cfg.BootLimit}
}

// bootname maps a slot name to the otad_slot value that boots it.
func (e *Engine) bootname(name string) string {
	if s, ok := e.cfg.Slots[name]; ok && s.Bootname != "" {
		return s.Bootname
	}
	return name
}

// slotName maps an otad_slot / otad.slot= value back to a slot name.
func (e *Engine) slotName(bootname string) string {
	for name, s := range e.cfg.Slots {
		if s.Bootname == bootname {
			return name
		}
	}
	if _, ok := e.cfg.Slots[bootname]; ok {
		return bootname
	}
	return ""
}

// opened is one verified bundle, positioned at its rootfs image.
type opened struct {
	src Source
	br  *bundle.Reader
	img *bundle.Image
	// sourceChecked: a delta image whose source was checked against the
	// active slot (on an earlier opening of the same bundle).
	sourceChecked bool
}

func (o *opened) Close() error {
	if o == nil { // a reopen that failed
		return nil
	}
	o.br.Close()
	return o.src.Close()
}

// openBundle opens the source and verifies everything up to the first
// payload byte: signatures, compatible, floor, expiry, chunk tables.
func (e *Engine) openBundle(ctx context.Context, source string) (*opened, error) {
	e.setOp(OpDownloading, "opening "+redactSource(source))
	src, err := e.openSource(ctx, source)
	if err != nil {
		return nil, err
	}
	e.setOp(OpVerifying, "checking signatures and manifest")
	fl, err := e.cfg.Floor.Get()
	if err != nil {
		src.Close()
		return nil, err
	}
	// HashRawImages: every full image's SHA-256 is checked on its way in, so
	// the block writer may settle the read-back by comparing chunks with the
	// medium instead of hashing the slot a second time.
	br, err := bundle.NewReader(src, bundle.Options{
		Keyring: e.cfg.Keyring, Compatible: e.cfg.Compatible, SecurityFloor: fl, Now: e.cfg.Clock.Now(),
		HashRawImages: true,
	})
	if err != nil {
		src.Close()
		return nil, err
	}
	// Never download more than the signed manifest declares (+1 byte for
	// the reader's trailing-data check): a server cannot make us read on.
	if c, ok := src.(Capper); ok {
		c.LowerCap(br.Size() + 1)
	}
	m := br.Manifest()
	if len(m.Images) != 1 || m.Images[0].Class != RootfsClass {
		src.Close()
		return nil, fmt.Errorf("update: bundle must hold exactly one %q image, has %d images", RootfsClass, len(m.Images))
	}
	img, err := br.Next()
	if err != nil {
		src.Close()
		return nil, err
	}
	return &opened{src: src, br: br, img: img}, nil
}

// install is the synchronous core of one install (fresh or resumed), in
// named phases: precheck, open and check the bundle, the delta source
// check, the resume point, then write and arm. Nothing on the device
// changes before beginWrite.
func (e *Engine) install(ctx context.Context, req *installReq) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	defer e.heartbeat()()

	active, targetName, err := e.precheck(req)
	if err != nil {
		return err
	}
	b, err := e.openBundle(ctx, req.source)
	if err != nil {
		return err
	}
	// b is replaced when a phase reopens the bundle; close the last one.
	defer func() { b.Close() }()
	sum, err := e.checkImage(req, b, active)
	if err != nil {
		return err
	}
	e.setInstalling(b.br.Manifest().Version, targetName)
	if b, err = e.checkDeltaSource(ctx, req, b, active, sum); err != nil {
		return err
	}
	t, err := e.cfg.OpenSlot(e.cfg.Slots[targetName], e.cfg.Slots[active])
	if err != nil {
		return err
	}
	defer t.Close()
	if err := slot.CheckFit(t, b.img.Size); err != nil {
		return fmt.Errorf("slot %s: %w", targetName, err)
	}
	var start journal.Resume
	if b, start, err = e.resumePoint(ctx, req, b, t); err != nil {
		return err
	}
	rec, err := e.beginWrite(req, b, targetName, active, start)
	if err != nil {
		return err
	}
	if err := e.writeAndVerify(ctx, b, t, rec, start, sum); err != nil {
		return err
	}
	return e.armAndFinish(ctx, rec, req.reboot)
}

// precheck refuses an install the device is not ready for, before the
// bundle is opened: it returns the active and the target slot.
func (e *Engine) precheck(req *installReq) (active, target string, err error) {
	active = e.bootedSlot()
	if active == "" {
		return "", "", errors.New("update: booted slot unknown (engine not started)")
	}
	target = other(active)
	if req.resume != nil && req.resume.Target != target {
		return "", "", fmt.Errorf("update: interrupted install targeted slot %s, which is the booted slot now", req.resume.Target)
	}
	if st := e.Status(); st.TrialBoot {
		return "", "", errors.New("update: the booted slot is still in its trial boot; confirm it first")
	}
	// Refused now rather than at the arm, after the whole download.
	if err := e.protocol().ArmRisk(); err != nil {
		return "", "", fmt.Errorf("update: %w", err)
	}
	if st, err := e.protocol().State(); err != nil {
		return "", "", err
	} else if !st.UpgradeAvailable && st.Slot != "" && st.Slot != e.bootname(active) {
		return "", "", fmt.Errorf("%w (U-Boot boots slot %s next, this is slot %s)", ErrFallbackPending, st.Slot, e.bootname(active))
	}
	return active, target, nil
}

// checkImage checks the verified manifest's image against the request and
// returns its SHA-256: well formed, the image a fallback must make, and
// (skip-unchanged) not already in the active slot.
func (e *Engine) checkImage(req *installReq, b *opened, active string) ([]byte, error) {
	img := b.img
	sum, err := hex.DecodeString(img.SHA256)
	if err != nil || len(sum) != 32 || (img.Encoding == bundle.EncodingDelta && bytes.Equal(sum, make([]byte, 32))) {
		// (a delta's all-zero hash would switch off Apply's image check,
		// which writeDelta relies on: refused here, before anything is
		// touched)
		return nil, fmt.Errorf("update: image sha256 %q malformed", img.SHA256)
	}
	if req.wantImage != "" && img.SHA256 != req.wantImage {
		return nil, fmt.Errorf("update: the fallback bundle holds image %.12s…, the delta makes %.12s…", img.SHA256, req.wantImage)
	}
	if req.skipUnchanged {
		if r, err := e.cfg.Journal.LoadSlot(active); err == nil && r.SHA256 == img.SHA256 {
			return nil, errUnchanged
		}
	}
	return sum, nil
}

// resumePoint decides where the write starts: a resume continues at its
// last synced chunk when the bundle is the same, the encoding allows it,
// the offset is aligned and the source can seek; otherwise the slot is
// rewritten from the start (reopening the bundle when the seek failed).
func (e *Engine) resumePoint(ctx context.Context, req *installReq, b *opened, t slot.Target) (*opened, journal.Resume, error) {
	r := req.resume
	if r == nil {
		return b, journal.Resume{}, nil
	}
	log := e.logger(KeyTx, req.tx, KeySlot, r.Target)
	if r.Bundle.Identity != b.br.Identity() || !e.canResume(r.Resume, b.img, t) {
		if r.Resume.Chunks > 0 {
			log.info("cannot continue the interrupted write at its chunk; rewriting the slot from the start")
		}
		return b, journal.Resume{}, nil
	}
	err := b.br.SeekChunk(r.Resume.Chunks)
	if err == nil {
		log.with("chunk", r.Resume.Chunks).info("resuming the slot write")
		return b, r.Resume, nil
	}
	log.withErr(err).info("cannot seek the source; rewriting the slot from the start")
	b.Close()
	nb, err := e.openBundle(ctx, req.source)
	if err != nil {
		return nil, journal.Resume{}, err
	}
	if nb.br.Identity() != r.Bundle.Identity {
		return nb, journal.Resume{}, errors.New("update: bundle changed while reopening it")
	}
	return nb, journal.Resume{}, nil
}

// beginWrite is the point of no return for the target's old content:
// journal first ("writing", with the resume point), then the target
// recorded bad, then the boot env made unable to point at it.
func (e *Engine) beginWrite(req *installReq, b *opened, target, active string, start journal.Resume) (*journal.Record, error) {
	m, img := b.br.Manifest(), b.img
	rec := &journal.Record{
		State: journal.StateWriting, Tx: req.tx, Target: target, Active: active,
		Bundle: journal.Bundle{Identity: b.br.Identity(), Version: m.Version, SecurityVersion: m.SecurityVersion,
			Compatible: m.Compatible, Source: req.source, ImageSHA256: img.SHA256, ImageSize: img.Size},
		Resume: start, Updated: e.cfg.Clock.Now(),
	}
	if req.resume != nil {
		rec.Resumes = req.resume.Resumes
	}
	if err := e.cfg.Journal.Save(rec); err != nil {
		return nil, err
	}
	if err := e.cfg.Journal.UpdateSlot(target, func(s *journal.SlotRecord) {
		*s = journal.SlotRecord{Name: target, State: journal.SlotBad, Reason: "being written by " + req.tx}
	}); err != nil {
		return nil, err
	}
	if err := e.protocol().Disarm(e.bootname(active)); err != nil {
		return nil, err
	}
	return rec, nil
}

// writeAndVerify writes the image, reads the slot back against its signed
// SHA-256 and only then journals "written" (the state arming requires).
func (e *Engine) writeAndVerify(ctx context.Context, b *opened, t slot.Target, rec *journal.Record, start journal.Resume, sum []byte) error {
	if err := e.writeImage(ctx, b, t, rec, start, sum); err != nil {
		return err
	}
	e.setOp(OpWriting, "reading back slot "+rec.Target)
	if err := e.cfg.VerifyReadBack(ctx, t, b.img.Size, sum); err != nil {
		return err
	}
	rec.State, rec.Resume, rec.Updated = journal.StateWritten, journal.Resume{Chunks: b.img.Chunks, Bytes: b.img.Size}, e.cfg.Clock.Now()
	return e.cfg.Journal.Save(rec)
}

// canResume reports whether the write may continue at r.
func (e *Engine) canResume(r journal.Resume, img *bundle.Image, t slot.Target) bool {
	if r.Chunks <= 0 || r.Chunks >= img.Chunks || img.Encoding == bundle.EncodingDelta {
		return false
	}
	if r.Bytes != int64(r.Chunks)*img.ChunkSize {
		return false
	}
	if a := t.WriteAlign(); a > 1 && r.Bytes%a != 0 {
		return false
	}
	return true
}

// writeImage streams verified bytes into the slot, syncing and journaling
// the resume point at least every SyncBytes.
func (e *Engine) writeImage(ctx context.Context, b *opened, t slot.Target, rec *journal.Record, start journal.Resume, sum []byte) error {
	img := b.img
	e.setOp(OpWriting, "writing slot "+rec.Target)
	// The bundle reader checks a full image's SHA-256 on its way in
	// (withholding the last chunk if it fails), and delta.Apply checks its
	// output's SHA-256 the same way (withholding the last window), so the
	// slot may settle the read-back by comparing each written chunk with the
	// medium instead of hashing it again.
	w, err := slot.OpenVerifiedWriter(ctx, t, start.Bytes, img.Size, sum)
	if err != nil {
		return err
	}
	defer w.Close()
	if img.Encoding == bundle.EncodingDelta {
		return e.writeDelta(ctx, b, t, w, rec, sum)
	}
	syncEvery := int(max(1, e.cfg.SyncBytes/img.ChunkSize))
	lastSync := start.Chunks
	done := start.Bytes
	buf := make([]byte, min(img.ChunkSize, 1<<20))
	e.progress(done, img.Size, "writing slot "+rec.Target)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := b.br.Read(buf)
		if n > 0 {
			if done+int64(n) > img.Size {
				return fmt.Errorf("update: image longer than its declared %d bytes", img.Size)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			e.progress(done, img.Size, "writing slot "+rec.Target)
		}
		if k := b.br.ChunksDone(); k-lastSync >= syncEvery && rerr == nil {
			if err := e.syncResume(w, rec, k, img.ChunkSize); err != nil {
				return err
			}
			lastSync = k
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if done != img.Size {
		return fmt.Errorf("update: image ended after %d of %d bytes", done, img.Size)
	}
	if err := w.Sync(); err != nil {
		return err
	}
	return w.Close()
}

// syncResume makes everything written so far durable and journals chunk k
// as the resume point: chunk k ends at or before what was synced, so
// resuming at k never skips unwritten bytes.
func (e *Engine) syncResume(w slot.Writer, rec *journal.Record, k int, chunkSize int64) error {
	if err := w.Sync(); err != nil {
		return err
	}
	rec.Resume = journal.Resume{Chunks: k, Bytes: int64(k) * chunkSize}
	rec.Updated = e.cfg.Clock.Now()
	return e.cfg.Journal.Save(rec)
}

// armAndFinish arms the written target (ONE env write) and records it
// pending; then reboots if asked. rec must be in state written.
func (e *Engine) armAndFinish(ctx context.Context, rec *journal.Record, reboot bool) error {
	if rec.State != journal.StateWritten {
		return ErrNotArmable
	}
	if err := e.protocol().Arm(e.bootname(rec.Target), e.bootname(rec.Active)); err != nil {
		return err
	}
	now := e.cfg.Clock.Now()
	rec.State, rec.Updated = journal.StatePendingReboot, now
	if err := e.cfg.Journal.Save(rec); err != nil {
		return err
	}
	if err := e.cfg.Journal.UpdateSlot(rec.Target, func(s *journal.SlotRecord) {
		*s = journal.SlotRecord{Name: rec.Target, State: journal.SlotPending, Version: rec.Bundle.Version,
			SHA256: rec.Bundle.ImageSHA256, Bundle: rec.Bundle.Identity, Installed: now}
	}); err != nil {
		return err
	}
	e.logger(KeyTx, rec.Tx, KeySlot, rec.Target, KeyVersion, rec.Bundle.Version, KeyEvent, EventSlotArmed).
		info("slot written, verified and armed for the next boot")
	e.setOp(OpPendingReboot, "reboot to activate slot "+rec.Target)
	e.emit(Event{Kind: "completed", Tx: rec.Tx, Slot: rec.Target,
		Message: fmt.Sprintf("installed %s into slot %s; reboot to activate", rec.Bundle.Version, rec.Target)})
	if reboot {
		e.doReboot(ctx, "activate slot "+rec.Target)
	}
	return nil
}

// doReboot asks the Rebooter to restart the device; failure is logged,
// the armed env stays and a later Reboot request or power cycle finishes.
func (e *Engine) doReboot(ctx context.Context, why string) {
	if e.cfg.Rebooter == nil {
		e.logger().warn("no rebooter configured; reboot the device to " + why)
		return
	}
	e.logger().info("rebooting to " + why)
	if err := e.cfg.Rebooter.Reboot(context.WithoutCancel(ctx)); err != nil {
		e.logger().withErr(err).error("reboot request failed")
		e.setLastError("reboot: " + err.Error())
	}
}

type sourceOptionsKey struct{}

// WithSourceOptions returns ctx carrying per-install source options (for
// example HTTP headers or TLS files a compat API received). The engine does
// not look inside; Config.OpenSource reads them back with SourceOptions.
func WithSourceOptions(ctx context.Context, v any) context.Context {
	return context.WithValue(ctx, sourceOptionsKey{}, v)
}

// SourceOptions returns what WithSourceOptions stored in ctx, or nil.
func SourceOptions(ctx context.Context) any { return ctx.Value(sourceOptionsKey{}) }
