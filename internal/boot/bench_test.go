package boot_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
)

// BenchmarkArmCommitCycle: one Arm and one Commit (two env writes, each
// fdatasync'ed and read back) on a redundant 16 KiB env file, with
// libubootenv's lock file. bench/10-bootenv.sh compares it with fw_setenv.
func BenchmarkArmCommitCycle(b *testing.B) {
	dir := b.TempDir()
	img := filepath.Join(dir, "env.img")
	if err := os.WriteFile(img, make([]byte, 0x8000), 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := bootenv.OpenStore(&bootenv.Config{Devices: []bootenv.Device{
		{Path: img, EnvSize: 0x4000}, {Path: img, Offset: 0x4000, EnvSize: 0x4000}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "A", "otad_prev": "A", "bootcmd": "run distro_bootcmd", "bootdelay": "2"} {
		e.Set(k, v)
	}
	if err := s.Init(e); err != nil {
		b.Fatal(err)
	}
	p := &boot.Protocol{Store: s}
	slots := [2]string{"A", "B"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cur, next := slots[i%2], slots[(i+1)%2]
		if err := p.Arm(next, cur); err != nil {
			b.Fatal(err)
		}
		b.StopTimer() // the trial boot is U-Boot's work, not otad's
		if _, err := bootsim.Step(s); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := p.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
