package dbusapi

// Limiter is io.otad.Update1's bound on calls in progress (MaxCalls, and
// MaxUnprivilegedInspects of them inspects from unprivileged callers),
// handed to otad's other bus faces (internal/raucapi) so that one bound
// holds for every face on the connection: a caller cannot double its share
// by using both interfaces. Slots are taken without waiting; a call that
// finds none is answered Busy at once.
type Limiter struct{ calls, inspects chan struct{} }

// NewLimiter is a Limiter of its own, for a face served without
// io.otad.Update1 (tests).
func NewLimiter() *Limiter {
	return &Limiter{calls: make(chan struct{}, MaxCalls), inspects: make(chan struct{}, MaxUnprivilegedInspects)}
}

// Limiter returns the server's own bound, shared (the channels are the
// server's, not copies).
func (s *Server) Limiter() *Limiter { return &Limiter{calls: s.calls, inspects: s.inspects} }

// EnterInspect takes the slots an inspect holds: a call slot, and from an
// unprivileged caller an inspect slot too. ok is false when none is free;
// otherwise the caller must call done once the inspect has ended.
func (l *Limiter) EnterInspect(privileged bool) (done func(), ok bool) {
	if !enter(l.calls) {
		return nil, false
	}
	if !privileged && !enter(l.inspects) {
		leave(l.calls)
		return nil, false
	}
	return func() {
		if !privileged {
			leave(l.inspects)
		}
		leave(l.calls)
	}, true
}

// PublicInspectError is what an unprivileged caller of any face learns of
// a failed inspect named name: a fixed sentence, never the backend's text
// (it may quote bytes of a file or a server's answer).
func PublicInspectError(name string) string { return publicInspectError(name) }
