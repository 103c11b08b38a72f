package channel

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/update"
)

// ErrFileMismatch: a bundle's bytes are not those the signed document names.
var ErrFileMismatch = errors.New("channel: bundle differs from the channel document")

// SourceOptions is the "source-options" value the agent passes with an
// install: the daemon's fetch settings for this download (Request) and
// the files the document names, by URL. The daemon's OpenSource applies
// Request and wraps the opened source with CheckSource, so the bundle must
// have exactly the size and SHA-256 the signed document gives — on top of
// the bundle's own signature and hashes. (Not journaled: an install the
// engine resumes after a restart is checked by the bundle's own rules only.)
type SourceOptions struct {
	Request fetch.RequestOptions
	Files   map[string]File
}

// CheckSource wraps src when url is one of the document's files; other
// URLs pass through.
func (o SourceOptions) CheckSource(url string, src update.Source) (update.Source, error) {
	f, ok := o.Files[url]
	if !ok {
		return src, nil
	}
	return NewCheckedSource(src, f)
}

// NewCheckedSource returns src checked against f: a size other than f.Size
// fails at once; the bytes are hashed as they are read from offset 0 on,
// and reaching the end with another SHA-256 fails that read instead of
// returning io.EOF (the bundle reader reads to the end before it releases
// its last chunk). Reading past f.Size fails. A read that is not
// contiguous with what was hashed so far (a seek forward) makes the final
// check impossible, so it fails too.
func NewCheckedSource(src update.Source, f File) (update.Source, error) {
	if src.Size() >= 0 && src.Size() != f.Size {
		src.Close()
		return nil, fmt.Errorf("%w: %s is %d bytes, the document says %d", ErrFileMismatch, f.URL, src.Size(), f.Size)
	}
	return &checkedSource{Source: src, want: f, h: sha256.New()}, nil
}

type checkedSource struct {
	update.Source
	want   File
	h      hash.Hash
	off    int64 // current read offset
	hashed int64 // bytes [0, hashed) went into h
}

func (c *checkedSource) Read(p []byte) (int, error) {
	n, err := c.Source.Read(p)
	if n > 0 {
		end := c.off + int64(n)
		if end > c.want.Size {
			return 0, fmt.Errorf("%w: %s is longer than the %d bytes the document says", ErrFileMismatch, c.want.URL, c.want.Size)
		}
		switch {
		case c.off > c.hashed:
			return 0, fmt.Errorf("%w: %s read out of order, its SHA-256 cannot be checked", ErrFileMismatch, c.want.URL)
		case end > c.hashed:
			c.h.Write(p[c.hashed-c.off : n])
			c.hashed = end
		}
		c.off = end
	}
	if errors.Is(err, io.EOF) {
		if c.hashed != c.want.Size {
			return n, fmt.Errorf("%w: %s ended at %d bytes, the document says %d", ErrFileMismatch, c.want.URL, c.hashed, c.want.Size)
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want.SHA256 {
			return n, fmt.Errorf("%w: %s has SHA-256 %.16s…, the document says %.16s…", ErrFileMismatch, c.want.URL, got, c.want.SHA256)
		}
	}
	return n, err
}

func (c *checkedSource) Seek(off int64, whence int) (int64, error) {
	pos, err := c.Source.Seek(off, whence)
	if err == nil {
		c.off = pos
	}
	return pos, err
}
