// Package powercut is otad's power-cut campaign: test tooling that cuts the
// power of a whole simulated board at one chosen write operation, and the
// campaign tests that run complete update cycles through the real engine
// (internal/update) with a cut at every write.
//
// A Domain is one power supply shared by every device of a board. Each
// erase, program, write, sync, rename, remove or directory sync on any
// device counts as one operation; reads do not. Cutting at operation N
// tears operation N (flash: the simulator's torn page or partial erase;
// block device and files: a random part of the write reaches the volatile
// cache) and makes every later call fail with ErrPowerCut. PowerOn then
// decides, per device, what of the volatile state survived: flash has none
// (every program is durable when it returns); BlockDev and CrashFS keep
// what was synced and, per TearMode, lose, keep or tear what was not.
//
// The models are deliberately more adversarial than real hardware where
// that is cheap: un-synced directory operations survive only as an ordered
// prefix (what a journaling file system guarantees), un-synced file data
// per 512-byte sector, and fsync of a file does not make its name durable.
package powercut

// The campaign (the package's tests) builds boards whose slots and boot
// env live on NAND, NAND with factory bad blocks, NOR (flash simulator,
// real slot and bootenv code) or block devices with a write cache, and
// whose journal and floor live on a CrashFS. A board boots through
// bootsim.Step (the boot script's rules, its env writes counted and cut
// like any other) and a kernel model: a slot boots only if it holds every
// byte of a known signed image; a "panic" image resets until the bootcount
// falls back; an "unhealthy" one fails the health check. Each daemon start
// is a new update.Engine on the same devices.
//
// Invariants checked at every boot, env write and daemon stop: the
// bootloader never boots a slot without a complete image; every env write
// that arms a slot finds that slot durably holding the image being
// installed; the booted slot's bytes never change while it runs; the floor
// never goes down and never exceeds the security version of a committed
// image; within bootlimit+1 boots of a cut (the last one being U-Boot's
// fallback) a committed good image runs; at the end otad installs and arms
// another image. `make powercut` (OTAD_POWERCUT=full) runs every cut point;
// plain `go test` a seeded sample.
//
// Each state file is also swept on its own, cut at every operation of a
// sequence of writes, and must read back as the last completed write or the
// one in flight: the install journal and slot records, the floor (both
// copies of every raise), and the fleet clients' files (the action owed to
// a hawkBit or channel server, the channel's accepted serial and its report
// spool).
