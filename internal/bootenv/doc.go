// Package bootenv reads and writes the U-Boot environment natively, in the
// format U-Boot, u-boot-tools and libubootenv share, so otad never has to
// start fw_setenv processes.
//
// Format: each copy is CRC32 (little endian) over the data area, then for a
// redundant environment one flags byte, then the data: "name=value" strings
// each ended by NUL, the list ended by an empty string. The data area fills
// the rest of the copy; unused bytes are part of the CRC.
//
// Invariants:
//   - A Save is one environment write: it goes to the copy that is NOT the
//     one a reader (U-Boot or fw_printenv) would pick now, is read back and
//     compared byte for byte (so its CRC is proven), and only then does the
//     new copy become the one readers pick (incrementing counter: its flag is
//     one higher, 255 wraps to 0; boolean scheme: the old copy's flag byte
//     is then programmed to 0 "obsolete"). A power cut at any instant of a
//     redundant Save leaves either the whole old or the whole new variable
//     set readable; the torn copy fails its CRC.
//   - The obsolete mark (boolean scheme, a Medium such as /dev/mtdN) is the
//     only write that is not a whole erased-and-programmed copy: the old
//     copy's flag byte goes from 1 to 0 by programming alone. It is issued
//     as ONE aligned program of the medium's program unit (64 bytes on NOR,
//     mtd.Info.ProgramUnit, so Linux's CFI drivers send it as buffered
//     programs and never as a one-word program) holding the bytes read from
//     the medium just before, with only the flag byte set to 0; the unit is
//     then read back and compared. Programming only clears bits
//     and a byte programmed with the value it holds keeps it, so the
//     program changes nothing but the flag byte. A power cut tearing it
//     leaves that byte with a subset of its bits cleared (still 1, or 0)
//     and the CRC and data bytes as they were, so both copies stay valid:
//     with the flag still 1 both are active and readers take copy 0, with 0
//     they take the new copy; whole either way.
//   - A single-copy environment is rewritten in place and is NOT power-fail
//     safe; Redundant() lets callers warn about it. On a FAT file system
//     (the Raspberry Pi's uboot.env, detected by statfs) ArmRisk refuses it
//     outright unless Config.AcceptSingleCopy: there a lost env means the
//     board boots U-Boot's built-in default.
//   - A copy in a file (FAT included) is written in place: pwrite inside the
//     file's existing size, then fsync (FAT) or fdatasync; never truncated,
//     recreated or renamed, which FAT cannot do atomically. The file keeps
//     its directory entry, size and clusters, so a torn write tears only the
//     copy being written.
//   - Nothing is guessed: a copy with a bad CRC is never used, no valid copy
//     is ErrNoValidCopy, an environment that does not fit is ErrTooLarge,
//     short reads and missing devices are errors.
//   - DeviceStore takes libubootenv's lock file (flock on
//     /var/lock/fw_printenv.lock) around every load and save and across a
//     whole Update, so no fw_printenv/fw_setenv reads while otad writes.
//     (libubootenv 0.3.x itself holds the lock only while reading: a
//     fw_setenv running during an otad Save can still overwrite it; the
//     environment stays whole because each side writes whole copies, but
//     one of the two changes is lost.)
//   - A copy on a NAND bad block is an error, never silently skipped.
//   - Two copies on the same storage never share a byte or an erase sector:
//     OpenStore refuses such a config, since one write (or erase) would tear
//     both copies and a power cut could leave none.
package bootenv
