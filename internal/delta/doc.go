// Package delta computes and applies binary delta patches between two
// slot images: the old image installed in the active slot and the new image
// for the inactive slot.
//
// A patch is a fixed header followed by one zstd stream that holds a source
// table and a sequence of windows. A window produces at most
// Header.WindowSize bytes of the new image from a few hashed operations:
// COPY (an extent of the old image), ZERO, LIT (new bytes) and ADD (new =
// old + diff over an approximate match, as bsdiff does). The format is laid
// out for the device: the patch is read once from start to end, the old image
// is read with ReadAt (pread on the active slot), the new image is written
// strictly sequentially, and Apply needs memory bounded by the header's
// declared limits (which are themselves capped), never by the image size.
//
// Invariants of Apply:
//   - Nothing is written to dst before the whole source table (SHA-256 of
//     every source block the patch reads) has been verified against src, so
//     a wrong source image fails with ErrSourceMismatch before the first
//     byte is written.
//   - A window's output is written only after its hash matches the patch. A
//     corrupt patch stops at the first bad window; everything written before
//     belongs to the new image. The hash (format version 2) is SHA-256 over
//     the window's place (new offset, old base offset, length), its control
//     section and the output of its ADD and LIT operations. COPY output is
//     not hashed a second time: it is byte-identical to old bytes the source
//     table already verified with SHA-256, at offsets the hashed control
//     section fixes, so hashing it again proves nothing new; ZERO output is
//     fixed by the control section alone. ADD output stays hashed, as it is
//     what the diff decoder computed. The one thing this gives up: a source
//     that changes between the source table check and a COPY's read (the
//     active slot, mounted read-only) is not noticed by the window hash but
//     by the caller's whole-image hash, which is checked before the slot can
//     boot. Version 1 patches hash each window's whole output.
//   - Only source bytes the patch actually needs are read and checked. The
//     generator never reads all-zero 4 KiB blocks of the old image (it emits
//     the equivalent zero or literal bytes instead), so blocks discarded by
//     fstrim on the active slot, which may read back as anything, cannot
//     break an update.
//   - Memory is bounded by the header's declared limits, which are capped
//     (MaxWindowSize, MaxCtrlSize, MaxZstdWindow; bzip2 diff sections at most
//     3.6 MB of block state, allocated once and reused by every window),
//     whatever the image size or the patch content.
//
// Apply is not atomic and keeps no state: after a power cut the caller starts
// again from the beginning (the inactive slot is not booted until its
// whole-image hash has been checked, which is the caller's job).
package delta
