package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/otadev/otad/internal/channel"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/hawkbit"
	"github.com/otadev/otad/internal/update"
)

// FetchOptions maps [fetch] onto the downloader: the headers and client
// certificate are bound to every configured origin (config refuses them
// without one) in a Credentials table the daemon keeps for its whole life,
// so a fleet client can add its own origin credential at runtime
// (Daemon.Credentials).
func FetchOptions(f config.Fetch) (fetch.Options, error) {
	o := fetch.Options{CAFile: f.CA, MinRate: f.MinRate, Deadline: f.Timeout, Credentials: &fetch.Credentials{}}
	if f.Redirects != "" {
		p, err := fetch.ParseRedirectPolicy(f.Redirects)
		if err != nil {
			return o, err
		}
		o.Redirects = p
	}
	headers := make([]string, len(f.Headers))
	for i, h := range f.Headers {
		headers[i] = h[0] + ": " + h[1]
	}
	for _, origin := range f.Origins {
		if len(headers) > 0 {
			if err := o.Credentials.Add(origin, headers); err != nil {
				return o, fmt.Errorf("[fetch] origins: %w", err)
			}
		}
		if f.Cert != "" || f.Key != "" {
			if err := o.Credentials.SetClientCert(origin, f.Cert, f.Key); err != nil {
				return o, fmt.Errorf("[fetch] cert: %w", err)
			}
		}
	}
	return o, nil
}

// fdPrefix names sources that are descriptors a caller passed; they exist
// only for the call or install that received them.
const fdPrefix = "fd:"

// errStaleDescriptor: a journaled install from a caller's descriptor
// cannot be resumed after a restart, the descriptor is gone.
var errStaleDescriptor = errors.New("daemon: the source was a caller's file descriptor, which does not survive a restart; install again")

// openSource is the engine's OpenSource. A source string goes through
// fetch with the daemon's options, adjusted by the per-install
// "source-options" an in-process caller may pass (fetch.RequestOptions:
// compat APIs, fleet clients).
func openSource(fo fetch.Options) func(ctx context.Context, src string) (update.Source, error) {
	return func(ctx context.Context, src string) (update.Source, error) {
		o := fo
		switch so := update.SourceOptions(ctx).(type) {
		case nil:
		case fetch.RequestOptions:
			var err error
			if o, err = so.Apply(fo); err != nil {
				return nil, err
			}
		case *fetch.RequestOptions:
			var err error
			if o, err = so.Apply(fo); err != nil {
				return nil, err
			}
		case channel.SourceOptions:
			// The channel client: the bundle must also be the file (size,
			// SHA-256) its signed document names.
			var err error
			if o, err = so.Request.Apply(fo); err != nil {
				return nil, err
			}
			s, err := fetch.Open(ctx, src, o)
			if err != nil {
				return nil, err
			}
			return so.CheckSource(src, s)
		case *callerFiles:
			// A bus caller's descriptor, opened with its rights: read
			// with pread, never looked up as a path.
			if f := so.lookup(src); f != nil {
				return fetch.FromFile(f.File, src, f.BlockOK, fo.MaxSize)
			}
		case *hawkbit.Download:
			// The hawkBit client: bounded resumes, the artifact's sha256.
			return so.Open(ctx, src, fo)
		default:
			return nil, fmt.Errorf("daemon: source-options of type %T not understood", so)
		}
		if strings.HasPrefix(src, fdPrefix) {
			return nil, errStaleDescriptor
		}
		return fetch.Open(ctx, src, o)
	}
}
