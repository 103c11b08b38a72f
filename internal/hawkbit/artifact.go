package hawkbit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/update"
)

// Errors an artifact download ends with.
var (
	// ErrArtifactHash: the artifact's bytes do not match the SHA-256 the
	// server announced. The last read is withheld, so the engine never
	// accepts the image.
	ErrArtifactHash = errors.New("hawkbit: artifact does not match the server's sha256")
	// ErrResumeLimit: the download was resumed more than max-resumes times.
	ErrResumeLimit = errors.New("hawkbit: download resumed too often (max-resumes)")
)

// Download is the "source-options" value the client hands to the engine
// with each install: the daemon's OpenSource finds it through
// update.SourceOptions and opens the download through Download.Open.
// It carries no secret.
type Download struct {
	URL        string
	SHA256     string // hex as the server announced it; "" not checked
	Size       int64
	MaxResumes int

	mu       sync.Mutex
	resumes  int
	limited  bool
	verified bool
}

// Resumes reports how often the download was resumed in this process and
// whether the max-resumes limit stopped it.
func (a *Download) Resumes() (n int, limited bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.resumes, a.limited
}

// Verified reports whether every byte of the artifact passed through this
// process and matched the server's SHA-256.
func (a *Download) Verified() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.verified
}

// Open opens the download for the engine: fo are the daemon's fetch
// options (the token reaches the server's origin through fo.Credentials,
// where the client registered it, so a resume after a restart carries it
// too). It allows at most MaxResumes resumes in all — fetch's own budget
// counts only consecutive failures, and an endless trickle of cut
// connections must end too — and checks the bytes against the server's
// SHA-256.
func (a *Download) Open(ctx context.Context, src string, fo fetch.Options) (update.Source, error) {
	if src != a.URL {
		return fetch.Open(ctx, src, fo)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	prev := fo.OnRetry
	fo.MaxRetries = a.MaxResumes
	if fo.MaxRetries <= 0 {
		fo.MaxRetries = -1
	}
	fo.OnRetry = func(off int64, attempt int, delay time.Duration, err error) {
		if prev != nil {
			prev(off, attempt, delay, err)
		}
		a.mu.Lock()
		a.resumes++
		over := a.resumes > a.MaxResumes
		if over {
			a.limited = true
		}
		a.mu.Unlock()
		if over {
			cancel(ErrResumeLimit)
		}
	}
	s, err := fetch.Open(cctx, src, fo)
	if err != nil {
		cancel(nil)
		if context.Cause(cctx) == ErrResumeLimit {
			return nil, fmt.Errorf("%w (%d)", ErrResumeLimit, a.MaxResumes)
		}
		return nil, err
	}
	var want []byte
	if a.SHA256 != "" {
		if want, err = hex.DecodeString(a.SHA256); err != nil || len(want) != sha256.Size {
			s.Close()
			cancel(nil)
			return nil, fmt.Errorf("hawkbit: server sent a malformed sha256 for %s", a.URL)
		}
	}
	return &hashedSource{Source: s, a: a, want: want, size: a.Size, h: sha256.New(), cancel: cancel}, nil
}

// hashedSource hashes the contiguous prefix of the artifact it hands out.
// When that prefix reaches the announced size, the digest must match
// before the read that completes it is returned; otherwise that read fails
// and the engine, which arms only after the whole bundle was read, stops.
type hashedSource struct {
	fetch.Source
	a      *Download
	want   []byte
	size   int64
	h      hash.Hash
	off    int64 // position of the next Read
	hashed int64 // bytes [0, hashed) went into h
	cancel context.CancelCauseFunc
}

func (s *hashedSource) Read(p []byte) (int, error) {
	n, err := s.Source.Read(p)
	end := s.off + int64(n)
	if s.want != nil && s.off <= s.hashed && end > s.hashed {
		s.h.Write(p[s.hashed-s.off : n])
		s.hashed = end
		if s.hashed >= s.size && s.size > 0 {
			if s.hashed != s.size || !bytes.Equal(s.h.Sum(nil), s.want) {
				return 0, ErrArtifactHash
			}
			s.a.mu.Lock()
			s.a.verified = true
			s.a.mu.Unlock()
		}
	}
	s.off = end
	return n, err
}

func (s *hashedSource) Seek(off int64, whence int) (int64, error) {
	pos, err := s.Source.Seek(off, whence)
	if err == nil {
		s.off = pos
	}
	return pos, err
}

// LowerCap passes the engine's cap on to the download.
func (s *hashedSource) LowerCap(n int64) {
	if c, ok := s.Source.(interface{ LowerCap(int64) }); ok {
		c.LowerCap(n)
	}
}

func (s *hashedSource) Close() error {
	err := s.Source.Close()
	s.cancel(nil)
	return err
}

var _ io.ReadSeekCloser = (*hashedSource)(nil)
