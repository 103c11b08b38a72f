// Command slotbench writes an image into a block device through the same
// calls the update engine makes (slot.OpenWith, slot.OpenVerifiedWriter,
// Write in stream-sized pieces, Close, optionally VerifyReadBack) and prints
// the elapsed seconds. bench/20-slotwrite.sh compares it against dd.
//
// Like the engine, it vouches for the stream with the -sha256 it is given;
// the engine's bundle reader checks that hash on the way in, which is not
// part of the slot write (dd hashes nothing either). -hash-input adds that
// check here, to show the end-to-end cost.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/otadev/otad/internal/slot"
)

func main() {
	dev := flag.String("dev", "", "block device of the inactive slot")
	image := flag.String("image", "", "image file")
	sum := flag.String("sha256", "", "hex SHA-256 of the image (as the manifest carries it)")
	readBack := flag.Bool("readback", false, "verify by reading the device back (default way: per-chunk compare)")
	hashInput := flag.Bool("hash-input", false, "hash the input stream on its way in and check it against -sha256, as the bundle reader does")
	piece := flag.Int("piece", 64<<10, "bytes per Write call, like a decompressing bundle reader")
	var o slot.Options
	flag.BoolVar(&o.SkipUnchanged, "skip-unchanged", false, "read each chunk first, write only if different")
	flag.Int64Var(&o.ChunkSize, "chunk", 0, "writer chunk size (0: default)")
	flag.Int64Var(&o.SyncEvery, "sync-every", 0, "periodic sync interval in bytes (0: default, <0: off)")
	flag.BoolVar(&o.FullReadBack, "full-readback", false, "read-back hashes the whole device after the write instead of comparing chunks")
	flag.BoolVar(&verbose, "v", false, "print write and read-back phase times to stderr")
	hashOnly := flag.Bool("hash-only", false, "only hash the image file (cached) with the read-back hasher: the floor of read-back cost")
	flag.Parse()
	if *hashOnly {
		if err := hashFile(*image); err != nil {
			fmt.Fprintln(os.Stderr, "slotbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*dev, *image, *sum, *readBack, *hashInput, *piece, o); err != nil {
		fmt.Fprintln(os.Stderr, "slotbench:", err)
		os.Exit(1)
	}
}

var verbose bool

// hashFile times slot.Hash over a file slot holding the image.
func hashFile(image string) error {
	st, err := os.Stat(image)
	if err != nil {
		return err
	}
	t, err := slot.NewFileTarget(image, st.Size())
	if err != nil {
		return err
	}
	defer t.Close()
	start := time.Now()
	if _, err := slot.Hash(context.Background(), t, st.Size()); err != nil {
		return err
	}
	fmt.Printf("%.4f\n", time.Since(start).Seconds())
	return nil
}

// onlyReader hides WriterTo/ReaderFrom so the copy goes through Write.
type onlyReader struct{ io.Reader }

func run(dev, image, sumHex string, readBack, hashInput bool, piece int, o slot.Options) error {
	want, err := hex.DecodeString(sumHex)
	if err != nil || len(want) != 32 {
		return fmt.Errorf("-sha256: want 64 hex digits")
	}
	f, err := os.Open(image)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	// The bench has no booted slot; name one that cannot collide.
	t, err := slot.OpenWith(slot.Slot{Name: "B", Device: dev, Type: slot.TypeBlock},
		slot.Slot{Name: "A", Device: "/nonexistent/active-slot"}, o)
	if err != nil {
		return err
	}
	defer t.Close()
	// Without read-back, the writer alone: nothing compared.
	open := slot.OpenWriter
	if readBack {
		open = func(ctx context.Context, t slot.Target, off, size int64) (slot.Writer, error) {
			return slot.OpenVerifiedWriter(ctx, t, off, size, want)
		}
	}
	w, err := open(ctx, t, 0, st.Size())
	if err != nil {
		return err
	}
	var in io.Reader = f
	h := sha256.New()
	if hashInput {
		in = io.TeeReader(f, h)
	}
	if _, err := io.CopyBuffer(w, onlyReader{in}, make([]byte, piece)); err != nil {
		return err
	}
	if hashInput && !bytes.Equal(h.Sum(nil), want) {
		return fmt.Errorf("input does not hash to -sha256")
	}
	if err := w.Close(); err != nil {
		return err
	}
	closed := time.Now()
	if readBack {
		if err := slot.VerifyReadBack(ctx, t, st.Size(), want); err != nil {
			return err
		}
	}
	fmt.Printf("%.4f\n", time.Since(start).Seconds())
	if verbose {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		fmt.Fprintf(os.Stderr, "write+close %.3fs, read-back %.3fs, peak RSS %.1f MB\n",
			closed.Sub(start).Seconds(), time.Since(closed).Seconds(), float64(ru.Maxrss)/1024)
	}
	return nil
}
