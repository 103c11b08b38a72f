package hawkbit

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/otadev/otad/internal/hawkbit/dditest"
)

// executions lists "execution/finished" of each feedback.
func executions(fs []dditest.Feedback) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Execution+"/"+f.Finished)
	}
	return out
}

// printSequence logs the recorded feedback; with HAWKBIT_FEEDBACK_OUT set
// it is also appended to that file (the sequences quoted in reports).
func printSequence(t *testing.T, title string, fs []dditest.Feedback) {
	text := title + "\n" + feedbackText(fs)
	t.Log("\n" + text)
	if p := os.Getenv("HAWKBIT_FEEDBACK_OUT"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.WriteString(text + "\n")
			f.Close()
		}
	}
}

// The happy path across a reboot: the final success reaches the server
// only after the trial boot of the new slot was confirmed and committed.
func TestHappyPathSuccessOnlyAfterCommit(t *testing.T) {
	b := newBoard(t)
	img := image(1, 1<<20+12345)
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, img), "")
	var confirmed atomic.Bool
	b.health = func(ctx context.Context, slot string) error {
		// The health check takes a while: long enough for the client to
		// report the trial boot.
		b.waitFor("the trial boot report", func() bool {
			for _, f := range b.srv.Feedback() {
				if strings.Contains(strings.Join(f.Details, " "), "on trial") {
					return true
				}
			}
			return false
		})
		confirmed.Store(true)
		return nil
	}
	var finalEarly atomic.Value
	b.srv.OnFeedback = func(n int, f dditest.Feedback) bool {
		if f.Final() {
			// Env read under the server's lock: what the device had
			// written when the result arrived.
			e, _ := b.env.Load()
			up, _ := e.Get("upgrade_available")
			s, _ := e.Get("otad_slot")
			if !confirmed.Load() || up != "0" || s != "B" {
				finalEarly.Store(f.String())
			}
		}
		return false
	}
	boots := b.drive(b.hasFinal(id))
	fs := b.srv.Feedback()
	printSequence(t, "happy path (action "+id+")", fs)
	if v := finalEarly.Load(); v != nil {
		t.Fatalf("final result sent before the commit: %v", v)
	}
	finals := b.srv.Finals(id)
	if len(finals) != 1 || finals[0].Finished != "success" {
		t.Fatalf("finals %v", finals)
	}
	if boots != 2 || b.slot != "B" {
		t.Fatalf("boots %d, slot %s", boots, b.slot)
	}
	if !bytes.Equal(b.readSlot("B", len(img)), img) {
		t.Fatal("slot B does not hold the image")
	}
	got := strings.Join(executions(fs), " ")
	for _, want := range []string{"proceeding/none", "downloaded/none", "closed/success"} {
		if !strings.Contains(got, want) {
			t.Fatalf("sequence %q lacks %s", got, want)
		}
	}
	if strings.Index(got, "downloaded/none") > strings.Index(got, "closed/success") {
		t.Fatalf("downloaded after closed: %s", got)
	}
	// configData: first contact, then again once the version changed.
	cds := b.srv.ConfigData()
	if len(cds) < 2 || cds[0]["compatible"] != "test-board" || cds[0]["booted_slot"] != "A" || cds[0]["site"] != "lab" ||
		cds[len(cds)-1]["version"] != "2.0" || cds[len(cds)-1]["booted_slot"] != "B" {
		t.Fatalf("configData %v", cds)
	}
	for _, r := range b.srv.Requests() {
		if r.Auth != "TargetToken "+testToken {
			t.Fatalf("request %s %s without the token: %q", r.Method, r.Path, r.Auth)
		}
	}
}

// A failed health check on the new slot: the engine falls back, and the
// server hears closed/failure naming the unit that failed.
func TestRollbackReportedWithUnit(t *testing.T) {
	b := newBoard(t)
	img := image(2, 1<<20)
	id := b.deploy("2.1", b.bundle("test-board", "2.1", 1, img), "")
	b.health = unitFailed
	b.drive(b.hasFinal(id))
	fs := b.srv.Feedback()
	printSequence(t, "rollback (action "+id+")", fs)
	finals := b.srv.Finals(id)
	if len(finals) != 1 || finals[0].Finished != "failure" {
		t.Fatalf("finals %v", finals)
	}
	if d := strings.Join(finals[0].Details, " "); !strings.Contains(d, "app.service") {
		t.Fatalf("failure does not name the unit: %q", d)
	}
	// The next boot falls back to A (the engine wrote the fallback).
	if b.envVar("otad_slot") != "A" {
		t.Fatalf("env still points at %s", b.envVar("otad_slot"))
	}
}

// A bundle the device refuses (wrong compatible) is reported as a failure
// and nothing reaches the slot or the env.
func TestRefusedBundleReportedBeforeAnyWrite(t *testing.T) {
	b := newBoard(t)
	before := b.readSlot("B", slotSize)
	id := b.deploy("3.0", b.bundle("other-board", "3.0", 1, image(3, 1<<20)), "")
	b.drive(b.hasFinal(id))
	fs := b.srv.Feedback()
	printSequence(t, "refused (action "+id+")", fs)
	finals := b.srv.Finals(id)
	if len(finals) != 1 || finals[0].Finished != "failure" || !strings.Contains(strings.Join(finals[0].Details, " "), "refused") {
		t.Fatalf("finals %v", finals)
	}
	for _, f := range fs {
		if f.Execution == "downloaded" {
			t.Fatalf("refused bundle reported downloaded: %v", f)
		}
	}
	if !bytes.Equal(b.readSlot("B", slotSize), before) || b.envVar("otad_slot") != "A" || b.envVar("upgrade_available") != "0" {
		t.Fatal("the refused bundle changed the slot or the env")
	}
}
