package daemon

import (
	"context"
	"maps"
	"sync"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/update"
)

// Source names of a bus caller's descriptors. They mean something only
// with the *callerFiles of the same install (openSource); a journaled
// install that names one cannot be resumed after a restart (the
// descriptor is gone) and fails with errStaleDescriptor.
const (
	fdBundle   = fdPrefix + "bundle"
	fdFallback = fdPrefix + "fallback"
)

// callerFiles are the descriptors a bus caller passed for one install or
// inspect, by the source names the engine is given for them. They travel
// to openSource as the install's "source-options".
type callerFiles struct {
	once  sync.Once
	files map[string]*dbusapi.File
}

func (c *callerFiles) lookup(src string) *dbusapi.File { return c.files[src] }

// close releases every descriptor, once.
func (c *callerFiles) close() {
	c.once.Do(func() {
		for _, f := range c.files {
			f.Close()
		}
	})
}

var _ dbusapi.FileBackend = Backend{}

// InstallFiles installs from descriptors the caller opened. The files are
// closed when the engine reports the install completed, when the server's
// context ends (shutdown), or at once if the install does not start.
func (b Backend) InstallFiles(ctx context.Context, source string, bundle *dbusapi.File, opts map[string]any) (string, error) {
	cf := &callerFiles{files: map[string]*dbusapi.File{}}
	o := maps.Clone(opts)
	delete(o, dbusapi.OptFallbackFile)
	if bundle != nil {
		cf.files[fdBundle] = bundle
		source = fdBundle
	}
	if f, ok := opts[dbusapi.OptFallbackFile].(*dbusapi.File); ok {
		cf.files[fdFallback] = f
		o["fallback"] = fdFallback
	}
	o["source-options"] = cf
	// Subscribed before the install starts, so its Completed is not missed.
	events, stop := b.E.Subscribe()
	tx, err := b.E.Install(ctx, source, o)
	if err != nil {
		stop()
		cf.close()
		return "", err
	}
	go func() {
		defer cf.close()
		defer stop()
		for {
			select {
			case ev, ok := <-events:
				if !ok || ev.Kind == "completed" && ev.Tx == tx {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return tx, nil
}

// InspectFile inspects a bundle the caller opened; the file is closed
// before it returns.
func (b Backend) InspectFile(ctx context.Context, f *dbusapi.File) (map[string]any, error) {
	cf := &callerFiles{files: map[string]*dbusapi.File{fdBundle: f}}
	defer cf.close()
	return b.Inspect(update.WithSourceOptions(ctx, cf), fdBundle)
}
