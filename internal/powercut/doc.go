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
