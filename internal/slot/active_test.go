package slot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func rdevOf(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev)
}

func TestRefusesActiveSlotUnderAnyName(t *testing.T) {
	devA, _ := loopDevice(t, 1<<20)
	devB, _ := loopDevice(t, 1<<20)
	dir := t.TempDir()
	active := Slot{Name: "A", Device: devA, Type: TypeBlock}

	// A /dev/disk/by-uuid style symlink, a chain of them, and a second
	// device node with the same number.
	link := filepath.Join(dir, "by-uuid-1234")
	if err := os.Symlink(devA, link); err != nil {
		t.Fatal(err)
	}
	link2 := filepath.Join(dir, "rootfs-b")
	if err := os.Symlink(link, link2); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "mmcblk0p2")
	maj, min := rdevOf(t, devA)
	mknod(t, node, unix.S_IFBLK, maj, min)

	for _, name := range []string{devA, link, link2, node, "/dev/../dev/./" + filepath.Base(devA)} {
		tg, err := Open(Slot{Name: "B", Device: name, Type: TypeBlock}, active)
		if !errors.Is(err, ErrActiveSlot) {
			if tg != nil {
				tg.Close()
			}
			t.Errorf("Open(%s) with active %s: err %v, want ErrActiveSlot", name, devA, err)
		}
	}
	// Same name as the booted slot.
	if _, err := Open(Slot{Name: "A", Device: devB}, active); !errors.Is(err, ErrActiveSlot) {
		t.Errorf("slot named like the active one: %v", err)
	}
	// The active slot configured through an alias protects the real node too.
	if _, err := Open(Slot{Name: "B", Device: devA}, Slot{Name: "A", Device: link2}); !errors.Is(err, ErrActiveSlot) {
		t.Errorf("active given as symlink: %v", err)
	}
	// Unknown active slot: refuse rather than guess.
	if _, err := Open(Slot{Name: "B", Device: devB}, Slot{}); !errors.Is(err, ErrActiveSlot) {
		t.Errorf("unknown active: %v", err)
	}
	// The inactive device opens fine, also through a symlink.
	linkB := filepath.Join(dir, "by-uuid-b")
	if err := os.Symlink(devB, linkB); err != nil {
		t.Fatal(err)
	}
	tg, err := Open(Slot{Name: "B", Device: linkB, Type: TypeBlock}, active)
	if err != nil {
		t.Fatalf("inactive slot refused: %v", err)
	}
	tg.Close()
	// A char device with the active block device's numbers is a different device.
	cnode := filepath.Join(dir, "char-twin")
	mknod(t, cnode, unix.S_IFCHR, maj, min)
	if err := checkNotActive("/sys", Slot{Name: "B", Device: cnode}, active); err != nil {
		t.Errorf("char device with the same numbers refused: %v", err)
	}
}

func TestRefusesActiveFileSlotViaHardLink(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "slotA.img")
	if err := os.WriteFile(a, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "other-name.img")
	if err := os.Link(a, hard); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Slot{Name: "B", Device: hard, Type: TypeFile}, Slot{Name: "A", Device: a, Type: TypeFile})
	if !errors.Is(err, ErrActiveSlot) {
		t.Fatalf("hard link to the active file: %v", err)
	}
}

// fakeSysfs builds the few sysfs entries the overlap checks read.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(path, content string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(root, target), p); err != nil {
			t.Fatal(err)
		}
	}
	// Disk 179:0 with partitions 179:2 and 179:3; dm-0 (253:0) on 179:2.
	mk("devices/mmc/block/mmcblk0/dev", "179:0\n")
	mk("devices/mmc/block/mmcblk0/mmcblk0p2/dev", "179:2\n")
	mk("devices/mmc/block/mmcblk0/mmcblk0p2/partition", "2\n")
	mk("devices/mmc/block/mmcblk0/mmcblk0p3/dev", "179:3\n")
	mk("devices/mmc/block/mmcblk0/mmcblk0p3/partition", "3\n")
	mk("devices/virtual/block/dm-0/dev", "253:0\n")
	link("devices/mmc/block/mmcblk0/mmcblk0p2", "devices/virtual/block/dm-0/slaves/mmcblk0p2")
	link("devices/mmc/block/mmcblk0", "dev/block/179:0")
	link("devices/mmc/block/mmcblk0/mmcblk0p2", "dev/block/179:2")
	link("devices/mmc/block/mmcblk0/mmcblk0p3", "dev/block/179:3")
	link("devices/virtual/block/dm-0", "dev/block/253:0")
	// UBI device 0 on mtd3 with volume ubi0_1 (char 245:2).
	mk("devices/virtual/ubi/ubi0/mtd_num", "3\n")
	mk("devices/virtual/ubi/ubi0/ubi0_1/corrupted", "0\n")
	mk("devices/virtual/ubi/ubi0/ubi0_1/reserved_ebs", "10\n")
	mk("devices/virtual/ubi/ubi0/ubi0_1/usable_eb_size", "126976\n")
	link("devices/virtual/ubi/ubi0/ubi0_1", "dev/char/245:2")
	return root
}

func TestRefusesOverlappingDevices(t *testing.T) {
	requireRoot(t)
	sys := fakeSysfs(t)
	dir := t.TempDir()
	nodes := map[string][3]uint32{
		"mmcblk0":   {unix.S_IFBLK, 179, 0},
		"mmcblk0p2": {unix.S_IFBLK, 179, 2},
		"mmcblk0p3": {unix.S_IFBLK, 179, 3},
		"dm-0":      {unix.S_IFBLK, 253, 0},
		"mtd3":      {unix.S_IFCHR, 90, 6},
		"mtd3ro":    {unix.S_IFCHR, 90, 7},
		"mtdblock3": {unix.S_IFBLK, 31, 3},
		"mtd4":      {unix.S_IFCHR, 90, 8},
		"ubi0_1":    {unix.S_IFCHR, 245, 2},
	}
	for n, v := range nodes {
		mknod(t, filepath.Join(dir, n), v[0], v[1], v[2])
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	cases := []struct {
		target, active string
		refused        bool
	}{
		{"mmcblk0", "mmcblk0p2", true},    // whole disk holding the active partition
		{"mmcblk0p3", "mmcblk0p2", false}, // sibling partition: the normal A/B case
		{"mmcblk0p2", "dm-0", true},       // active rootfs is dm-verity on p2
		{"mmcblk0", "dm-0", true},         // ...and on the disk under it
		{"mmcblk0p3", "dm-0", false},
		{"mtd3ro", "mtd3", true}, // read-only node of the same flash
		{"mtdblock3", "mtd3", true},
		{"mtd4", "mtd3", false},
		{"mtd3", "ubi0_1", true}, // raw flash under the active UBI volume
		{"mtd4", "ubi0_1", false},
	}
	for _, c := range cases {
		err := checkNotActive(sys, Slot{Name: "B", Device: p(c.target)}, Slot{Name: "A", Device: p(c.active)})
		if c.refused != errors.Is(err, ErrActiveSlot) {
			t.Errorf("target %s, active %s: err %v, refused want %v", c.target, c.active, err, c.refused)
		}
	}
}
