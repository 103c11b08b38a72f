package hawkbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/update"
)

// Notes kept on the action (fleet.Action.Notes).
const (
	noteFile       = "file"
	noteSHA256     = "sha256"
	noteSize       = "size"
	noteFallback   = "fallback"
	noteScheduled  = "scheduled"  // why "scheduled" was reported
	noteDownloaded = "downloaded" // "downloaded" was acknowledged
	noteTrial      = "trial"      // the trial boot was reported
	noteRejected   = "rejected"   // cancel id already answered "rejected"
)

func (c *Client) deploymentURL(id string) string {
	return c.base + "/deploymentBase/" + url.PathEscape(id) + "/feedback"
}

func (c *Client) cancelURL(id string) string {
	return c.base + "/cancelAction/" + url.PathEscape(id) + "/feedback"
}

// feedback posts one status. gone reports a 410: the server no longer
// has the action active.
func (c *Client) feedback(ctx context.Context, u, exec, finished string, prog *Progress, details ...string) (gone bool, err error) {
	now := c.cfg.Clock.Now()
	fb := Feedback{Time: now.UTC().Format("2006-01-02T15:04:05.000Z"), Timestamp: now.UnixMilli(),
		Status: Status{Execution: exec, Result: Result{Finished: finished, Progress: prog}, Details: details}}
	code, err := c.send(ctx, http.MethodPost, u, fb)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusGone:
		return true, nil
	case code/100 != 2:
		return false, &FeedbackError{Execution: exec, Code: code}
	}
	return false, nil
}

// FeedbackError is a feedback the server answered with a non-2xx status
// other than 410.
type FeedbackError struct {
	Execution string
	Code      int
}

func (e *FeedbackError) Error() string {
	return fmt.Sprintf("hawkbit: feedback %s: server answered %d", e.Execution, e.Code)
}

// Permanent reports a refusal that repeating cannot change (4xx other
// than 408 and 429): the action is unknown to the server or the message
// unacceptable to it.
func (e *FeedbackError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

// progress reports a non-final step; failures are logged, not retried.
func (c *Client) progress(ctx context.Context, a *fleet.Action, exec string, prog *Progress, details ...string) bool {
	// Bounded: engine events queue up meanwhile, and a stalled server must
	// not make this client miss the end of the install.
	ctx, cancel := context.WithTimeout(ctx, progressTimeout)
	defer cancel()
	gone, err := c.feedback(ctx, c.deploymentURL(a.ID), exec, FinishedNone, prog, details...)
	if err != nil {
		c.cfg.Log(slog.LevelWarn, "hawkbit: feedback", "action", a.ID, "execution", exec, "error", err)
		return false
	}
	if gone {
		c.cfg.Log(slog.LevelInfo, "hawkbit: the server no longer has the action active", "action", a.ID)
	}
	return true
}

// deliverOwed sends the final result still owed, once more if needed. A
// 2xx or a 410 (the action is closed on the server) ends the debt.
func (c *Client) deliverOwed(ctx context.Context) {
	a := c.act
	if !a.Owed() {
		return
	}
	o := a.Outcome
	var gone bool
	var err error
	if o.Kind == fleet.Canceled {
		gone, err = c.feedback(ctx, c.cancelURL(a.CancelID), ExecClosed, FinishedSuccess, nil, o.Reason)
	} else {
		finished := FinishedSuccess
		if o.Kind == fleet.Failure {
			finished = FinishedFailure
		}
		details := []string{o.Reason}
		if v := a.Version; v != "" {
			details = append(details, "version "+v+", slot "+a.Target)
		}
		gone, err = c.feedback(ctx, c.deploymentURL(a.ID), ExecClosed, finished, nil, details...)
	}
	var fe *FeedbackError
	switch {
	case errors.As(err, &fe) && fe.Permanent():
		// Sending it again cannot help, and an owed result blocks every
		// later action: give up on this one, loudly.
		c.cfg.Log(slog.LevelError, "hawkbit: the server refuses the final result; dropping it", "action", a.ID, "error", err)
	case err != nil:
		c.cfg.Log(slog.LevelWarn, "hawkbit: final result not delivered yet", "action", a.ID, "error", err)
		return
	}
	a.Delivered = true
	if err := c.save(a); err == nil {
		c.cfg.Log(slog.LevelInfo, "hawkbit: final result delivered", "action", a.ID, "result", o.Kind, "gone", gone)
	}
}

// finish records the final outcome and tries to deliver it now.
func (c *Client) finish(ctx context.Context, a *fleet.Action, o fleet.Outcome) {
	a.Finish(o)
	if c.save(a) != nil {
		return // retried from the engine's state at the next settle
	}
	c.cfg.Log(slog.LevelInfo, "hawkbit: action finished", "action", a.ID, "result", o.Kind, "reason", o.Reason)
	c.deliverOwed(ctx)
}

// handleDeployment looks at the action the server offers.
func (c *Client) handleDeployment(ctx context.Context, href string) {
	var db DeploymentBase
	if _, err := c.getJSON(ctx, href, &db); err != nil {
		c.cfg.Log(slog.LevelWarn, "hawkbit: reading the deployment", "error", err)
		return
	}
	if db.ID == "" {
		return
	}
	a := c.act
	switch {
	case a != nil && a.ID == db.ID:
		if a.Phase == fleet.PhaseReceived {
			c.maybeStart(ctx, a, &db)
		}
		return // in progress, or finished (its result owed or already sent)
	case a.Open(), a.Owed():
		c.cfg.Log(slog.LevelInfo, "hawkbit: another action waits until the current one is reported", "current", a.ID, "next", db.ID)
		return
	}
	st := c.u.Status()
	a = &fleet.Action{ID: db.ID, Phase: fleet.PhaseReceived, Booted: st.BootSlot, Target: fleet.Other(st.BootSlot),
		Received: c.cfg.Clock.Now()}
	art, fallback, version, err := c.pick(&db)
	if err != nil {
		c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure, Reason: err.Error(), Refused: true})
		return
	}
	a.Source, a.Version = c.link(art), version
	a.SetNote(noteFile, art.Filename)
	a.SetNote(noteSHA256, art.Hashes.SHA256)
	a.SetNote(noteSize, strconv.FormatInt(art.Size, 10))
	if fallback != nil {
		a.SetNote(noteFallback, c.link(fallback))
	}
	if a.Source == "" {
		c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure, Reason: "artifact " + art.Filename + " has no download link"})
		return
	}
	if c.save(a) != nil {
		return
	}
	c.maybeStart(ctx, a, &db)
}

// pick finds the .otab artifact in the configured part. Two .otab
// artifacts are a delta bundle (the one named *delta*) and the full
// bundle it falls back to when the active slot is not the delta's source.
func (c *Client) pick(db *DeploymentBase) (art, fallback *Artifact, version string, err error) {
	for i := range db.Deployment.Chunks {
		ch := &db.Deployment.Chunks[i]
		if ch.Part != c.cfg.Part {
			continue
		}
		var otabs []*Artifact
		for j := range ch.Artifacts {
			if strings.HasSuffix(ch.Artifacts[j].Filename, ".otab") {
				otabs = append(otabs, &ch.Artifacts[j])
			}
		}
		switch len(otabs) {
		case 0:
			return nil, nil, "", fmt.Errorf("chunk %q (part %s) has no .otab artifact", ch.Name, ch.Part)
		case 1:
			return otabs[0], nil, ch.Version, nil
		case 2:
			d, f := otabs[0], otabs[1]
			if strings.Contains(f.Filename, "delta") {
				d, f = f, d
			}
			if !strings.Contains(d.Filename, "delta") {
				return nil, nil, "", fmt.Errorf("chunk %q has two full .otab artifacts; want one (or a *delta*.otab and its full bundle)", ch.Name)
			}
			return d, f, ch.Version, nil
		default:
			return nil, nil, "", fmt.Errorf("chunk %q has %d .otab artifacts; want one (or a delta and its full bundle)", ch.Name, len(otabs))
		}
	}
	return nil, nil, "", fmt.Errorf("the deployment has no chunk of part %q (configured part)", c.cfg.Part)
}

// link picks the artifact's download link for the server's scheme.
func (c *Client) link(a *Artifact) string {
	order := []string{"download-http", "download"}
	if strings.HasPrefix(c.cfg.Server, "https:") {
		order = []string{"download", "download-http"}
	}
	for _, k := range order {
		if l, ok := a.Links[k]; ok && l.Href != "" {
			if u, err := c.resolve(l.Href); err == nil {
				return u
			}
		}
	}
	return ""
}

// maybeStart installs a received action unless the server says to wait.
// otad writes and arms in one install, so "download" and "update" are
// one step: either may say skip (wait), and an unavailable maintenance
// window waits too. "attempt" is followed like "forced": nothing on the
// device vetoes an update.
func (c *Client) maybeStart(ctx context.Context, a *fleet.Action, db *DeploymentBase) {
	d := db.Deployment
	why := ""
	switch {
	case d.MaintenanceWindow == WindowUnavailable:
		why = "waiting for the maintenance window"
	case d.Download == HandlingSkip || d.Update == HandlingSkip:
		why = "the server asked to skip for now"
	}
	if why != "" {
		if a.Note(noteScheduled) != why {
			c.progress(ctx, a, ExecScheduled, nil, why)
			a.SetNote(noteScheduled, why)
			_ = c.save(a)
		}
		return
	}
	c.start(ctx, a)
}

// start hands the artifact to the engine. The action is saved as
// installing first: after a cut the engine's journal tells whether the
// install took.
func (c *Client) start(ctx context.Context, a *fleet.Action) {
	st := c.u.Status()
	if st.BootSlot != a.Booted {
		// Received on one slot, rebooted into the other before starting.
		a.Booted, a.Target = st.BootSlot, fleet.Other(st.BootSlot)
	}
	a.Phase, a.PrevTx, a.Tx = fleet.PhaseInstalling, st.Tx, ""
	a.Attempts++
	if c.save(a) != nil {
		return
	}
	size, _ := strconv.ParseInt(a.Note(noteSize), 10, 64)
	art := &Download{URL: a.Source, SHA256: a.Note(noteSHA256), Size: size, MaxResumes: c.cfg.MaxResumes}
	opts := map[string]any{"reboot": false, "source-options": art}
	if fb := a.Note(noteFallback); fb != "" {
		opts["fallback"] = fb
	}
	tx, err := c.u.Install(ctx, a.Source, opts)
	if errors.Is(err, update.ErrBusy) {
		// Another install (otactl, a resumed one) runs: try again later.
		a.Phase, a.Attempts = fleet.PhaseReceived, a.Attempts-1
		_ = c.save(a)
		return
	}
	if err != nil {
		c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure, Reason: "install: " + err.Error()})
		return
	}
	c.art, c.lastPct = art, 0
	a.Tx = tx
	if c.save(a) != nil {
		return
	}
	c.progress(ctx, a, ExecProceeding, &Progress{Cnt: 0, Of: 100},
		fmt.Sprintf("installing %s (version %s) into slot %s", a.Note(noteFile), a.Version, a.Target))
}

// onEvent follows the engine for the current action.
func (c *Client) onEvent(ctx context.Context, ev update.Event) {
	a := c.act
	if !a.Open() || (a.Tx != "" && ev.Tx != "" && ev.Tx != a.Tx) {
		return
	}
	switch ev.Kind {
	case "progress":
		if a.Phase != fleet.PhaseInstalling {
			return
		}
		p := c.u.Status().Progress
		if p.Percent >= c.lastPct+progressStep && p.Percent < 100 {
			c.lastPct = p.Percent - p.Percent%progressStep
			c.progress(ctx, a, ExecProceeding, &Progress{Cnt: p.Percent, Of: 100}, p.Phase)
		}
	case "completed":
		if a.Phase == fleet.PhaseInstalling {
			c.installEnded(ctx, a, ev)
			return
		}
		c.settle(ctx)
	case "rolledback":
		c.settle(ctx)
	}
}

// installEnded handles the end of the engine's install job.
func (c *Client) installEnded(ctx context.Context, a *fleet.Action, ev update.Event) {
	if a.CancelID != "" {
		return // handleCancel decides
	}
	if ev.Result == update.ResultOK {
		c.armed(ctx, a)
		return
	}
	if c.art != nil {
		if n, limited := c.art.Resumes(); limited {
			c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure,
				Reason: fmt.Sprintf("download resumed %d times, more than max-resumes (%d): %s", n-1, c.cfg.MaxResumes, ev.Message)})
			return
		}
	}
	c.finish(ctx, a, fleet.FromCompleted(ev))
}

// armed: the image is in the slot, verified and armed. Report
// "downloaded", then reboot if configured. Idempotent, so a restart at any
// point repeats only what may not have happened.
func (c *Client) armed(ctx context.Context, a *fleet.Action) {
	if a.Phase == fleet.PhaseInstalling {
		a.Phase = fleet.PhaseArmed
		if c.save(a) != nil {
			return
		}
	}
	if a.Note(noteDownloaded) == "" {
		detail := "image verified in slot " + a.Target + " and armed for the next boot"
		switch {
		case c.art != nil && c.art.Verified():
			detail += "; artifact sha256 matched"
		case a.Note(noteSHA256) != "":
			detail += "; bundle signature verified (artifact sha256 not re-checked: download resumed after a restart)"
		}
		if c.progress(ctx, a, ExecDownloaded, &Progress{Cnt: 100, Of: 100}, detail) {
			a.SetNote(noteDownloaded, "sent")
			_ = c.save(a)
		}
	}
	if !c.cfg.AutoReboot || a.Phase == fleet.PhaseFinal {
		return
	}
	a.Phase = fleet.PhaseRebooting
	if c.save(a) != nil {
		return
	}
	c.progress(ctx, a, ExecProceeding, nil, "rebooting into slot "+a.Target)
	c.reboot(ctx)
}

// reboot asks the engine to reboot; a refusal (the install job still
// ending) is retried at the next settle.
func (c *Client) reboot(ctx context.Context) {
	c.rebootFailed = false
	if err := c.u.Reboot(ctx); err != nil {
		c.rebootFailed = true
		c.cfg.Log(slog.LevelError, "hawkbit: reboot", "error", err)
	}
}

// settle decides an armed or rebooting action from the engine's state:
// after the reboot the health check commits (success) or the slot ends
// bad (failure). Before that there is nothing to tell.
func (c *Client) settle(ctx context.Context) {
	a := c.act
	if a != nil && a.Phase == fleet.PhaseInstalling && a.CancelID == "" {
		// The install's completed event may have been dropped (a slow
		// subscriber): the engine's journal says how it ended.
		switch c.u.JournalState(a.Tx) {
		case journal.StatePendingReboot:
			c.armed(ctx, a)
		case journal.StateFailed:
			if st := c.u.Status(); !engineBusy(st, a.Tx) {
				c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure, Reason: lastError(st, a.Target)})
			}
		}
		return
	}
	if a == nil || (a.Phase != fleet.PhaseArmed && a.Phase != fleet.PhaseRebooting) {
		return
	}
	st := c.u.Status()
	if o, ok := fleet.Decide(a, st); ok {
		c.finish(ctx, a, o)
		return
	}
	if a.Phase == fleet.PhaseRebooting && c.rebootFailed && st.BootSlot == a.Booted && st.Operation == update.OpPendingReboot {
		c.reboot(ctx)
	}
	if st.BootSlot == a.Target && st.TrialBoot && a.Note(noteTrial) == "" {
		if c.progress(ctx, a, ExecProceeding, nil, "booted slot "+a.Target+" on trial; health check running") {
			a.SetNote(noteTrial, "sent")
			_ = c.save(a)
		}
	}
}

// restore settles what a previous run left. The engine has started (its
// journal settled, a resumed install or a confirmation may be running).
func (c *Client) restore(ctx context.Context) {
	a := c.act
	if !a.Open() {
		return
	}
	st := c.u.Status()
	switch a.Phase {
	case fleet.PhaseArmed, fleet.PhaseRebooting:
		if st.BootSlot == a.Booted && st.Operation == update.OpPendingReboot && a.CancelID == "" {
			c.armed(ctx, a) // "downloaded" and the reboot may not have happened
		}
		c.settle(ctx)
	case fleet.PhaseInstalling:
		if a.Tx == "" && st.Tx != a.PrevTx {
			a.Tx = st.Tx // cut between Install and saving its tx
		}
		js := c.u.JournalState(a.Tx)
		switch {
		case js == journal.StateWriting:
			// The engine resumes the interrupted write by itself (or has
			// just failed it past its own cap: its completed event follows).
			a.Attempts++
			if c.save(a) != nil {
				return
			}
			if a.Attempts-1 > c.cfg.MaxResumes {
				_ = c.u.Cancel()
				c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure,
					Reason: fmt.Sprintf("install interrupted %d times, more than max-resumes (%d)", a.Attempts-1, c.cfg.MaxResumes)})
				return
			}
			c.progress(ctx, a, ExecResumed, nil, "install resumed after a restart")
		case js == journal.StateWritten:
			// Verified, not armed yet: the engine reads back and arms;
			// its completed event follows.
		case js == journal.StatePendingReboot:
			c.armed(ctx, a)
		case js == journal.StateFailed:
			c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure, Reason: lastError(st, a.Target)})
		case js != "":
			// Past the arm already (confirming, committed, rolled back).
			a.Phase = fleet.PhaseRebooting
			if c.save(a) == nil {
				c.settle(ctx)
			}
		case a.CancelID != "":
			// Canceled while writing and cut before the result was saved:
			// nothing runs any more, so the cancel is done.
			c.finish(ctx, a, fleet.Outcome{Kind: fleet.Canceled, Reason: "install stopped; slot " + a.Target + " not armed"})
		case a.Attempts > c.cfg.MaxResumes:
			c.finish(ctx, a, fleet.Outcome{Kind: fleet.Failure,
				Reason: fmt.Sprintf("install interrupted %d times, more than max-resumes (%d)", a.Attempts, c.cfg.MaxResumes)})
		default:
			// The install never reached the journal (refused, cut before
			// it began, or a source the engine cannot resume): run it again.
			c.start(ctx, a)
		}
	}
}

// engineBusy reports whether the engine still runs transaction tx.
func engineBusy(st update.Status, tx string) bool {
	switch st.Operation {
	case update.OpDownloading, update.OpVerifying, update.OpWriting:
		return st.Tx == tx
	}
	return false
}

func slotState(st update.Status, name string) string {
	for _, s := range st.Slots {
		if s.Name == name {
			return s.State
		}
	}
	return ""
}

// lastError is why the install failed, as the engine recorded it.
func lastError(st update.Status, target string) string {
	if st.LastError != "" {
		return st.LastError
	}
	for _, s := range st.Slots {
		if s.Name == target && s.Reason != "" {
			return s.Reason
		}
	}
	return "install failed"
}

// handleCancel answers a cancel request by the phase the action is in:
// not started → accepted; writing → the engine's Cancel, accepted; armed
// but not rebooted → disarmed (one env write back to the running slot),
// accepted; booted into the new slot → rejected, the action goes on.
func (c *Client) handleCancel(ctx context.Context, href string) {
	var ca CancelAction
	if _, err := c.getJSON(ctx, href, &ca); err != nil {
		c.cfg.Log(slog.LevelWarn, "hawkbit: reading the cancel request", "error", err)
		return
	}
	if ca.ID == "" {
		return
	}
	stop := ca.CancelAction.StopID
	a := c.act
	if a == nil || a.ID != stop || !a.Open() {
		// Nothing of ours runs for it: accept, nothing to undo.
		if _, err := c.feedback(ctx, c.cancelURL(ca.ID), ExecClosed, FinishedSuccess, nil, "nothing running for action "+stop); err != nil {
			c.cfg.Log(slog.LevelWarn, "hawkbit: cancel feedback", "error", err)
		}
		return
	}
	st := c.u.Status()
	if a.Phase == fleet.PhaseInstalling {
		a.CancelID = ca.ID
		if c.save(a) != nil {
			return
		}
		if err := c.u.Cancel(); err == nil {
			c.finish(ctx, a, fleet.Outcome{Kind: fleet.Canceled,
				Reason: "install stopped while writing; slot " + a.Target + " marked bad, slot " + a.Booted + " untouched"})
			return
		}
		// Nothing to cancel: the install ended meanwhile.
		st = c.u.Status()
		if st.Tx == a.Tx && st.Operation == update.OpPendingReboot {
			a.Phase = fleet.PhaseArmed
		} else {
			c.finish(ctx, a, fleet.Outcome{Kind: fleet.Canceled, Reason: "install had already ended; slot " + a.Target + " not armed"})
			return
		}
	}
	switch a.Phase {
	case fleet.PhaseReceived:
		a.CancelID = ca.ID
		c.finish(ctx, a, fleet.Outcome{Kind: fleet.Canceled, Reason: "canceled before anything was written"})
	case fleet.PhaseArmed, fleet.PhaseRebooting:
		if st.BootSlot != a.Booted {
			if a.Note(noteRejected) == ca.ID {
				return
			}
			if _, err := c.feedback(ctx, c.cancelURL(ca.ID), ExecRejected, FinishedNone, nil,
				"slot "+a.Target+" already booted; the health check decides this action"); err == nil {
				a.SetNote(noteRejected, ca.ID)
				_ = c.save(a)
			}
			return
		}
		a.CancelID = ca.ID
		if c.save(a) != nil {
			return
		}
		if err := c.u.Disarm(a.Target); err != nil {
			c.cfg.Log(slog.LevelError, "hawkbit: disarming for a cancel", "error", err)
			return // asked again at the next poll
		}
		c.finish(ctx, a, fleet.Outcome{Kind: fleet.Canceled,
			Reason: "slot " + a.Target + " disarmed before the reboot; the next boot stays on slot " + a.Booted})
	}
}
