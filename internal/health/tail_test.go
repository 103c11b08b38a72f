package health

import (
	"bytes"
	"testing"
)

// FuzzTailBuffer: whatever the write sizes, the buffer holds exactly the
// last max bytes of everything written, marked when something was dropped.
func FuzzTailBuffer(f *testing.F) {
	f.Add([]byte("hello world"), uint8(4), uint8(3))
	f.Add(bytes.Repeat([]byte("x"), 300), uint8(17), uint8(64))
	f.Add([]byte{}, uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk, max uint8) {
		if chunk == 0 || max == 0 {
			return
		}
		tb := &tailBuffer{max: int(max)}
		for rest := data; len(rest) > 0; {
			n := min(int(chunk), len(rest))
			if w, err := tb.Write(rest[:n]); w != n || err != nil {
				t.Fatalf("Write = %d, %v", w, err)
			}
			rest = rest[n:]
		}
		want := data
		prefix := ""
		if len(data) > int(max) {
			want = data[len(data)-int(max):]
			prefix = "…"
		}
		if got := tb.String(); got != prefix+string(want) {
			t.Fatalf("tail %q, want %q", got, prefix+string(want))
		}
	})
}
