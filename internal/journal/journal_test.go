package journal

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// logFS records the operations that reach the file system, in order.
type logFS struct {
	OSFS
	ops []string
}

type logFile struct {
	File
	fs   *logFS
	name string
}

func (l *logFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := l.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		l.ops = append(l.ops, "open "+filepath.Base(name))
	}
	return &logFile{f, l, filepath.Base(name)}, nil
}
func (f *logFile) Write(p []byte) (int, error) {
	f.fs.ops = append(f.fs.ops, "write "+f.name)
	return f.File.Write(p)
}
func (f *logFile) Sync() error { f.fs.ops = append(f.fs.ops, "sync "+f.name); return f.File.Sync() }
func (l *logFS) Rename(a, b string) error {
	l.ops = append(l.ops, "rename "+filepath.Base(a)+" "+filepath.Base(b))
	return l.OSFS.Rename(a, b)
}
func (l *logFS) SyncDir(d string) error { l.ops = append(l.ops, "syncdir"); return l.OSFS.SyncDir(d) }

func TestRoundTripAndOrder(t *testing.T) {
	dir := t.TempDir()
	lfs := &logFS{}
	j := &Journal{FS: lfs, Dir: dir}
	r, err := j.Load()
	if err != nil || r.State != StateIdle {
		t.Fatalf("empty journal: %+v %v", r, err)
	}
	want := &Record{State: StateWriting, Tx: "tx1", Target: "B", Active: "A",
		Bundle: Bundle{Identity: "ab", Version: "2.0", SecurityVersion: 3, Source: "/x.otab"},
		Resume: Resume{Image: 0, Chunks: 7, Bytes: 7 << 20}, Resumes: 1,
		Updated: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := j.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := j.Load()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v %v", got, err)
	}
	order := []string{"open journal.json.tmp", "write journal.json.tmp", "sync journal.json.tmp",
		"rename journal.json.tmp journal.json", "syncdir"}
	if !reflect.DeepEqual(lfs.ops, order) {
		t.Fatalf("ops %q, want %q", lfs.ops, order)
	}
}

func TestTornTempIgnored(t *testing.T) {
	dir := t.TempDir()
	j := &Journal{FS: OSFS{}, Dir: dir}
	if err := j.Save(&Record{State: StateWritten, Tx: "t"}); err != nil {
		t.Fatal(err)
	}
	// A cut after the temp write but before the rename leaves a torn temp.
	if err := os.WriteFile(filepath.Join(dir, "journal.json.tmp"), []byte(`{"state":"pend`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := j.Load()
	if err != nil || r.State != StateWritten {
		t.Fatalf("got %+v %v", r, err)
	}
	if err := j.Save(&Record{State: StatePendingReboot, Tx: "t"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := j.Load(); r.State != StatePendingReboot {
		t.Fatalf("after save over torn temp: %+v", r)
	}
}

func TestCorruptIsReported(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "journal.json"), []byte("{not json"), 0o644)
	if _, err := (&Journal{FS: OSFS{}, Dir: dir}).Load(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}

func TestSlotRecords(t *testing.T) {
	j, err := New(filepath.Join(t.TempDir(), "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := j.LoadSlot("B"); err != nil || r.Name != "B" || r.State != SlotUnknown {
		t.Fatalf("%+v %v", r, err)
	}
	if err := j.UpdateSlot("B", func(r *SlotRecord) { r.State = SlotPending; r.Version = "2" }); err != nil {
		t.Fatal(err)
	}
	if r, _ := j.LoadSlot("B"); r.State != SlotPending || r.Version != "2" {
		t.Fatalf("%+v", r)
	}
	if err := j.SaveSlot(&SlotRecord{Name: "../x"}); err == nil || !strings.Contains(err.Error(), "bad slot name") {
		t.Fatalf("path in slot name accepted: %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"state":"writing","resume":{"image":0,"chunks":3,"bytes":3}}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "journal.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := (&Journal{FS: OSFS{}, Dir: dir}).Load()
		if err == nil && r.State == "" {
			t.Fatal("loaded a record without state")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
