package hawkbit

import (
	"strings"
	"testing"
	"time"
)

func TestPickArtifact(t *testing.T) {
	c := &Client{cfg: Config{Part: "os", Server: "https://h.example"}}
	art := func(name string) Artifact {
		return Artifact{Filename: name, Size: 1, Links: map[string]Link{
			"download":      {Href: "https://h.example/DEFAULT/controller/v1/d/softwaremodules/1/artifacts/" + name},
			"download-http": {Href: "http://h.example/DEFAULT/controller/v1/d/softwaremodules/1/artifacts/" + name},
		}}
	}
	db := func(part string, arts ...Artifact) *DeploymentBase {
		return &DeploymentBase{ID: "1", Deployment: Deployment{Chunks: []Chunk{
			{Part: "bApp", Name: "app", Artifacts: []Artifact{art("app.otab")}},
			{Part: part, Name: "rootfs", Version: "2.0", Artifacts: arts},
		}}}
	}
	a, fb, v, err := c.pick(db("os", art("readme.txt"), art("gw-2.0.otab")))
	if err != nil || a.Filename != "gw-2.0.otab" || fb != nil || v != "2.0" {
		t.Fatalf("one bundle: %v %v %q %v", a, fb, v, err)
	}
	if u := c.link(a); !strings.HasPrefix(u, "https://") {
		t.Fatalf("https server, link %s", u)
	}
	a, fb, _, err = c.pick(db("os", art("gw-2.0.otab"), art("gw-1.9-2.0-delta.otab")))
	if err != nil || a.Filename != "gw-1.9-2.0-delta.otab" || fb == nil || fb.Filename != "gw-2.0.otab" {
		t.Fatalf("delta and fallback: %v %v %v", a, fb, err)
	}
	for _, d := range []*DeploymentBase{
		db("os", art("a.otab"), art("b.otab")),
		db("os", art("notes.txt")),
		db("firmware", art("gw.otab")),
		db("os", art("a.otab"), art("b-delta.otab"), art("c.otab")),
	} {
		if _, _, _, err := c.pick(d); err == nil {
			t.Errorf("accepted %+v", d.Deployment.Chunks[1])
		}
	}
}

// The new slot never comes up (hangs until the watchdog resets it, every
// trial): U-Boot falls back after bootlimit tries, and otad on the old
// slot reports the rollback as the failure.
func TestBootloaderFallbackReported(t *testing.T) {
	b := newBoard(t)
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(40, 1<<20)), "")
	r := b.powerOn()
	select {
	case <-r.rebooted:
	case <-time.After(60 * time.Second): // hang guard
		t.Fatal("no reboot requested")
	}
	r.stop()
	trials := 0
	for b.reboot() == "B" {
		trials++ // reset by the watchdog before otad ran
		if trials > 10 {
			t.Fatal("U-Boot never fell back")
		}
	}
	b.drive(b.hasFinal(id))
	f := b.srv.Finals(id)
	printSequence(t, "bootloader fallback (action "+id+")", b.srv.Feedback())
	if len(f) != 1 || f[0].Finished != "failure" || !strings.Contains(strings.Join(f[0].Details, " "), "did not boot") {
		t.Fatalf("finals %v after %d trial boots", f, trials)
	}
}
