#!/usr/bin/env bash
# Regenerates the golden redundant-environment images with the real
# mkenvimage (not with otad's encoder, so the tests are not circular).
# Each image is two 0x100-byte copies: copy A at 0, copy B at 0x100.
set -euo pipefail
cd "$(dirname "$0")"
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
copy() { # copy NAME VALUE FLAG -> $t/NAME.bin (one redundant copy)
  printf 'v=%s\nboot=run distro_bootcmd\n' "$2" > "$t/$1.txt"
  mkenvimage -r -s 0x100 -o "$t/$1.bin" "$t/$1.txt"
  printf "\\x$(printf %02x "$3")" | dd of="$t/$1.bin" bs=1 seek=4 conv=notrunc status=none
}
corrupt() { printf 'X' | dd of="$1" bs=1 seek=7 conv=notrunc status=none; } # the first byte of v's value
copy new new 2; corrupt "$t/new.bin"; copy old old 1
cat "$t/new.bin" "$t/old.bin" > copyA-bad-crc.bin          # A newer but bad CRC: B (old) wins
copy a a 5; copy b b 5
cat "$t/a.bin" "$t/b.bin" > flags-equal.bin                 # equal flags: A wins
copy a a 255; copy b b 0
cat "$t/a.bin" "$t/b.bin" > flag-wrap-255-0.bin             # counter: 0 follows 255, B wins; boolean: A (0xFF)
copy a a 1; corrupt "$t/a.bin"; copy b b 2; corrupt "$t/b.bin"
cat "$t/a.bin" "$t/b.bin" > both-bad.bin                    # no valid copy
copy a a 1; copy b b 2
cat "$t/a.bin" "$t/b.bin" | head -c 384 > truncated.bin     # B cut short: an error, not a guess
copy old old 0; copy new new 1
cat "$t/old.bin" "$t/new.bin" > boolean-obsolete.bin        # A obsolete(0), B active(1): B wins
