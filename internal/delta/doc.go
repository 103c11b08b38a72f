// Package delta computes and applies binary delta patches between two
// slot images: the old image installed in the active slot and the new image
// for the inactive slot.
//
// A patch is a fixed header followed by one zstd stream that holds a source
// table and a sequence of windows. A window produces at most
// Header.WindowSize bytes of the new image from a few operations:
// COPY (an extent of the old image), ZERO, LIT (new bytes), ADD (new =
// old + diff over an approximate match, as bsdiff does) and LZ (a zstd frame
// decoded with a raw dictionary of the previous window's output, extents of
// the old image and extents of the new image that earlier windows wrote:
// what major releases need, new code and data that bsdiff's matches cover
// badly and that often recurs within the new release). The format is laid
// out for the device: the patch is read once from start to end, the old image
// is read with ReadAt (pread on the active slot) or mapped, the new image is
// written strictly sequentially and read back only where earlier windows
// wrote it, and Apply needs memory bounded by the header's declared limits
// (which are themselves capped), never by the image size.
//
// Invariants of Apply:
//   - Nothing is written to dst before the whole source table (a CRC-32C of
//     every chunk of source blocks the patch reads) has been checked against
//     src, so a wrong source image fails with ErrSourceMismatch before the
//     first byte is written. The table is an early, cheap mismatch detector;
//     the integrity of the output does not rest on it.
//   - Every output byte goes through one SHA-256, in order, and a window is
//     written only after the hash's chaining value at its end (its ends are
//     multiples of 64 bytes) matches the patch; the last window only after
//     the digest matches Header.NewSHA256. So a corrupt patch, a source
//     difference the CRC missed, or a source that changed after the table
//     check stops at the first bad window, everything written before belongs
//     to the new image, and a nil return means dst received exactly the image
//     with that SHA-256 — the final image check, done in the same pass (no
//     output byte is hashed twice).
//   - Only source bytes the patch actually needs are read and checked. The
//     generator never reads all-zero 4 KiB blocks of the old image (it emits
//     the equivalent zero or literal bytes instead), so blocks discarded by
//     fstrim on the active slot, which may read back as anything, cannot
//     break an update.
//   - Memory is bounded by the header's declared limits, which are capped
//     (MaxWindowSize, MaxCtrlSize, MaxZstdWindow, MaxLZDict; bzip2 diff
//     sections at most 3.6 MB of block state, allocated once and reused by
//     every window; an LZ frame is decoded in one call into the window
//     buffer, which it may not grow), whatever the image size or the patch
//     content. LZ dictionaries are read-only mappings of the two slots
//     placed side by side in one reserved range (page cache the kernel can
//     drop and re-read, not Apply's own memory); where a slot cannot be
//     mapped they are copied, and a header LZDict over MaxLZDictCopy is then
//     refused before anything is written. A fault reading a mapped slot is
//     an error, not a crash.
//   - New-image extents lie wholly before the window being made: bytes that
//     passed the hash chain and were handed to dst, read back after
//     Applier.Sync. A patch that reads back (FlagReadsNew) is refused up
//     front when there is no target to read.
//
// Apply is not atomic and keeps no state: after a power cut the caller starts
// again from the beginning (the inactive slot is not armed until Apply has
// returned nil and the caller's read-back of the medium has passed).
package delta
