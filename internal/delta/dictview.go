package delta

import (
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dictView is the one address range an LZ operation's dictionary lives in:
// first room for the previous window's output (ordinary memory Apply
// copies each window into, right-aligned), then the operation's slot
// extents. Where both slots can be mapped, the extents are read-only
// mappings of the slots placed there with MAP_FIXED: a dictionary of tens
// of MiB then costs page cache the kernel may drop and re-read, not memory
// of Apply's own, which is what keeps a major-release delta inside the
// device's budget. Otherwise the extents are copied into the range, which
// is then ordinary memory of prevCap + the header's LZDict (at most
// MaxLZDictCopy).
type dictView struct {
	mem     []byte
	prevCap int
	prevLen int
	mapped  bool
}

// fdOf returns the descriptor behind r when r can be mapped: an *os.File
// or a slot that exposes its file's descriptor.
func fdOf(r io.ReaderAt) (int, bool) {
	if f, ok := r.(interface{ Fd() uintptr }); ok {
		return int(f.Fd()), true
	}
	return -1, false
}

// newDictView reserves the range. mapped asks for mappings; it falls back
// to copies when the page size is not SourceBlock (extents are only
// SourceBlock aligned).
func newDictView(prevCap, dictCap int, mapped bool) (*dictView, error) {
	page := os.Getpagesize()
	if page != SourceBlock {
		mapped = false
	}
	prevCap = (prevCap + SourceBlock - 1) / SourceBlock * SourceBlock
	v := &dictView{prevCap: prevCap, mapped: mapped}
	if !mapped {
		if dictCap > MaxLZDictCopy {
			return nil, fmt.Errorf("delta: %d-byte LZ dictionaries need mappable slots", dictCap)
		}
		v.mem = make([]byte, prevCap+dictCap)
		return v, nil
	}
	// One anonymous range with no memory committed behind it: the start
	// becomes memory as the previous output is copied in, the rest is
	// replaced by mappings of the slots.
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(prevCap+dictCap), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("delta: mmap: %w", err)
	}
	v.mem = unsafe.Slice((*byte)(p), prevCap+dictCap)
	return v, nil
}

// remember keeps out as the previous output, ending where the extents
// start.
func (v *dictView) remember(out []byte) {
	copy(v.mem[v.prevCap-len(out):v.prevCap], out)
	v.prevLen = len(out)
}

// put places n bytes of r at offset off (both SourceBlock multiples, checked
// by the caller) at position at of the extent area.
func (v *dictView) put(at int, r io.ReaderAt, off int64, n int) error {
	dst := v.mem[v.prevCap+at : v.prevCap+at+n]
	if fd, ok := fdOf(r); ok && v.mapped {
		if _, err := unix.MmapPtr(fd, off, unsafe.Pointer(&dst[0]), uintptr(n), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
			return fmt.Errorf("delta: mmap: %w", err)
		}
		return nil
	}
	return readOld(r, off, dst)
}

// dict is the dictionary: the last prev bytes of the previous output, then
// ext bytes of extents.
func (v *dictView) dict(prev, ext int) []byte {
	return v.mem[v.prevCap-prev : v.prevCap+ext]
}

func (v *dictView) close() {
	if v.mapped && len(v.mem) > 0 {
		// Also removes the fixed mappings inside the range.
		unix.MunmapPtr(unsafe.Pointer(&v.mem[0]), uintptr(len(v.mem)))
	}
	v.mem = nil
}
