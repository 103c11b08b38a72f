package update

import (
	"context"
	"fmt"
	"sync"
)

// openSource runs Config.OpenSource under ctx. An open that blocks in the
// kernel (a FIFO without a writer, a hung NFS server) cannot be
// interrupted, so it runs on its own goroutine and is abandoned when ctx
// ends: Cancel and shutdown never wait for it. A source that opens after
// it was abandoned is closed at once. Reads go through ctxSource.
func (e *Engine) openSource(ctx context.Context, source string) (Source, error) {
	type result struct {
		src Source
		err error
	}
	var (
		mu        sync.Mutex
		abandoned bool
	)
	ch := make(chan result, 1)
	go func() {
		src, err := e.cfg.OpenSource(ctx, source)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if err == nil && src != nil {
				src.Close()
			}
			return
		}
		ch <- result{src, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		return &ctxSource{Source: r.src, ctx: ctx}, nil
	case <-ctx.Done():
	}
	mu.Lock()
	abandoned = true
	mu.Unlock()
	select {
	case r := <-ch: // opened just before it was abandoned
		if r.err == nil && r.src != nil {
			r.src.Close()
		}
	default:
	}
	return nil, fmt.Errorf("update: opening the bundle: %w", context.Cause(ctx))
}

// ctxSource ends reads once ctx is done, between two reads of the
// underlying source. (A read already blocked in the kernel on a regular
// file is not interruptible; fetch's HTTP reads follow ctx themselves.)
type ctxSource struct {
	Source
	ctx context.Context
}

func (s *ctxSource) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, fmt.Errorf("update: reading the bundle: %w", context.Cause(s.ctx))
	}
	return s.Source.Read(p)
}

// LowerCap forwards to the underlying source when it can cap itself.
func (s *ctxSource) LowerCap(n int64) {
	if c, ok := s.Source.(Capper); ok {
		c.LowerCap(n)
	}
}
