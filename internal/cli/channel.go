//go:build !otad_device

package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/channel"
)

// channelSubs are the subcommands of "otad channel": they maintain a static
// channel directory (channel.json + bundles/) that any web server serves.
var channelSubs = []struct {
	name, summary string
	run           func(ctx context.Context, e *Env, args []string) error
}{
	{"init", "create a channel directory for one compatible", channelInit},
	{"add", "publish a bundle (and its deltas) as a release", channelAdd},
	{"rollout", "set a release's rollout stages, or --advance to the next", channelRollout},
	{"pause", "pause, --resume or --halt a release's rollout", channelPause},
	{"sign", "sign the draft as the next serial into channel.json", channelSign},
	{"show", "verify and print a channel document", channelShow},
	{"stats", "per-release outcome rates from a reports file (JSON lines)", channelStats},
}

func cmdChannel(ctx context.Context, e *Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		w := e.Stdout
		if len(args) == 0 {
			w = e.Stderr
		}
		fmt.Fprintf(w, "usage: %s channel <subcommand> [flags] DIR\n\nA channel directory is served as is by any web server; edits go to DIR/draft.json\nand take effect when 'sign' writes DIR/channel.json.\n\nsubcommands:\n", e.Prog)
		for _, s := range channelSubs {
			fmt.Fprintf(w, "  %-8s %s\n", s.name, s.summary)
		}
		if len(args) == 0 {
			return usagef("%s channel: no subcommand given", e.Prog)
		}
		return errHelpShown
	}
	for _, s := range channelSubs {
		if s.name == args[0] {
			return s.run(ctx, e, args[1:])
		}
	}
	return usagef("%s channel: unknown subcommand %q (init, add, rollout, pause, sign, show, stats)", e.Prog, args[0])
}

func oneDir(fs interface {
	NArg() int
	Arg(int) string
}, cmd string) (string, error) {
	if fs.NArg() != 1 {
		return "", usagef("channel %s: need one channel DIR", cmd)
	}
	return fs.Arg(0), nil
}

func channelInit(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel init", "DIR", "Creates DIR/draft.json and DIR/bundles/.")
	compatible := fs.String("compatible", "", "device compatible string (required)")
	validity := fs.Duration("validity", 7*24*time.Hour, "how long each signed document stays valid (devices refuse it after)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	dir, err := oneDir(fs, "init")
	if err != nil {
		return err
	}
	if *compatible == "" {
		return usagef("channel init: --compatible is required")
	}
	if err := channel.InitDir(dir, *compatible, *validity); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "initialized channel %s for %s (documents valid %s)\n", dir, *compatible, *validity)
	return nil
}

func channelAdd(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel add", "DIR", "Copies the bundles into DIR/bundles and adds a release to the draft.")
	bundlePath := fs.String("bundle", "", "full bundle (required)")
	id := fs.String("id", "", "release id (default: the bundle's version); a new id reshuffles the buckets")
	stages := fs.String("rollout", "100", "stages PERCENT[@OFFSET],...: e.g. 1,10@24h,100@72h from now")
	minVersion := fs.String("min-version", "", "devices running an older version install this release whatever the rollout")
	window := fs.String("window", "", "maintenance window HH:MM-HH:MM in device local time")
	keyring := fs.String("keyring", "", "keyring directory: verify every bundle before publishing it")
	var deltas listFlag
	fs.Var(&deltas, "delta", "delta bundle to the same image, repeatable")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	dir, err := oneDir(fs, "add")
	if err != nil {
		return err
	}
	if *bundlePath == "" {
		return usagef("channel add: --bundle is required")
	}
	now := time.Now()
	o := channel.AddOptions{ID: *id, Bundle: *bundlePath, Deltas: deltas, MinVersion: *minVersion, Now: now}
	if o.Rollout, err = channel.ParseStages(*stages, now); err != nil {
		return usagef("channel add: --rollout: %v", err)
	}
	if *window != "" {
		s, en, ok := strings.Cut(*window, "-")
		if !ok {
			return usagef("channel add: --window %q: want HH:MM-HH:MM", *window)
		}
		o.Window = &channel.Window{Start: s, End: en}
	}
	if *keyring != "" {
		if o.Keyring, err = bundle.LoadKeyring(*keyring); err != nil {
			return err
		}
	}
	d, err := channel.LoadDraft(dir)
	if err != nil {
		return err
	}
	r, err := d.AddRelease(dir, o)
	if err != nil {
		return err
	}
	if err := d.Save(dir); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "added release %s (version %s, %d delta(s)); run 'channel sign' to publish\n", r.ID, r.Version, len(r.Deltas))
	return nil
}

func channelRollout(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel rollout", "DIR", "Replaces a release's stages (--stages), or starts its next stage now (--advance)\nif the reports show rollback and failure rates within the thresholds.")
	id := fs.String("release", "", "release id (required)")
	stages := fs.String("stages", "", "new stages PERCENT[@OFFSET],... from now")
	advance := fs.Bool("advance", false, "start the next stage now")
	reports := fs.String("reports", "", "reports file (JSON lines) gating --advance (required with --advance)")
	maxRollback := fs.Float64("max-rollback", 2, "refuse --advance above this rollback rate (percent)")
	maxFailure := fs.Float64("max-failure", 5, "refuse --advance above this failure rate (percent)")
	minReports := fs.Int("min-reports", 1, "refuse --advance with fewer reports for the release")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	dir, err := oneDir(fs, "rollout")
	if err != nil {
		return err
	}
	if *id == "" || (*stages == "") == !*advance {
		return usagef("channel rollout: --release and exactly one of --stages or --advance")
	}
	d, err := channel.LoadDraft(dir)
	if err != nil {
		return err
	}
	r, err := d.Release(*id)
	if err != nil {
		return err
	}
	now := time.Now()
	if *stages != "" {
		if r.Rollout, err = channel.ParseStages(*stages, now); err != nil {
			return usagef("channel rollout: --stages: %v", err)
		}
	} else {
		if *reports == "" {
			return usagef("channel rollout --advance: --reports FILE is required (the gate)")
		}
		st, err := releaseStats(*reports, *id)
		if err != nil {
			return err
		}
		rb, fl := st.Rate(st.Rollback), st.Rate(st.Failure)
		if st.Reports < *minReports {
			return fmt.Errorf("channel rollout: not widening %s: %d reports, --min-reports %d", *id, st.Reports, *minReports)
		}
		if rb > *maxRollback || fl > *maxFailure {
			return fmt.Errorf("channel rollout: not widening %s: rollback %.2f %% (max %.2f), failure %.2f %% (max %.2f) over %d reports",
				*id, rb, *maxRollback, fl, *maxFailure, st.Reports)
		}
		bp, err := r.Advance(now)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.Stdout, "release %s: rollback %.2f %%, failure %.2f %% over %d reports; now at %d.%02d %%\n",
			*id, rb, fl, st.Reports, bp/100, bp%100)
	}
	if err := d.Save(dir); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "release %s: %s; run 'channel sign' to publish\n", *id, describeStages(r, now))
	return nil
}

func releaseStats(path, id string) (channel.ReleaseStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return channel.ReleaseStats{}, err
	}
	defer f.Close()
	all, _, err := channel.Stats(f)
	if err != nil {
		return channel.ReleaseStats{}, err
	}
	for _, s := range all {
		if s.Release == id {
			return s, nil
		}
	}
	return channel.ReleaseStats{Release: id}, nil
}

func describeStages(r *channel.Release, now time.Time) string {
	var parts []string
	for _, s := range r.Rollout {
		parts = append(parts, fmt.Sprintf("%g %% at %s", s.Percent, s.At.UTC().Format(time.RFC3339)))
	}
	bp := r.PercentAt(now)
	return fmt.Sprintf("%s, now %d.%02d %% (%s)", r.State, bp/100, bp%100, strings.Join(parts, ", "))
}

func channelPause(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel pause", "DIR", "Freezes a release's rollout where it stands (--resume continues it, shifting the\nstages not reached; --halt stops every new install of it).")
	id := fs.String("release", "", "release id (required)")
	resume := fs.Bool("resume", false, "continue a paused or halted release")
	halt := fs.Bool("halt", false, "halt the release")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	dir, err := oneDir(fs, "pause")
	if err != nil {
		return err
	}
	if *id == "" || (*resume && *halt) {
		return usagef("channel pause: --release, and at most one of --resume and --halt")
	}
	d, err := channel.LoadDraft(dir)
	if err != nil {
		return err
	}
	r, err := d.Release(*id)
	if err != nil {
		return err
	}
	now := time.Now()
	switch {
	case *resume:
		r.Resume(now)
	case *halt:
		r.Halt()
	default:
		r.Pause(now)
	}
	if err := d.Save(dir); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "release %s: %s; run 'channel sign' to publish\n", *id, describeStages(r, now))
	return nil
}

func channelSign(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel sign", "DIR", "Signs the draft as the next serial, created now, into DIR/channel.json.\nThe keys need role \"channel\" (otad bundle keygen --role channel).")
	var keyPaths listFlag
	fs.Var(&keyPaths, "key", "private key file with role channel, repeatable")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	dir, err := oneDir(fs, "sign")
	if err != nil {
		return err
	}
	if len(keyPaths) == 0 {
		return usagef("channel sign: --key is required")
	}
	var signers []channel.Signer
	for _, p := range keyPaths {
		k, err := bundle.LoadPrivateKey(p)
		if err != nil {
			return err
		}
		if k.Role != channel.RoleChannel {
			return fmt.Errorf("channel sign: key %s has role %q; devices only accept role %q for channels", k.ID, k.Role, channel.RoleChannel)
		}
		signers = append(signers, k)
	}
	doc, err := channel.SignDir(dir, rand.Reader, time.Now(), signers...)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "signed %s: serial %d, %d release(s), expires %s\n", filepath.Join(dir, channel.DocumentFile),
		doc.Serial, len(doc.Releases), doc.Expires.Format(time.RFC3339))
	return nil
}

func channelShow(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel show", "DIR|FILE", "Verifies channel.json against a keyring (or, without --keyring, prints it\nUNVERIFIED) and shows each release's rollout now.")
	keyring := fs.String("keyring", "", "keyring directory (as on the device)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("channel show: need one DIR or FILE")
	}
	path := fs.Arg(0)
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, channel.DocumentFile)
	}
	signed, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var docBytes []byte
	verified := "NOT verified (no --keyring)"
	if *keyring != "" {
		kr, err := bundle.LoadKeyring(*keyring)
		if err != nil {
			return err
		}
		ckr, err := channel.Keyring(kr)
		if err != nil {
			return err
		}
		var ids []string
		if docBytes, ids, err = channel.Open(signed, ckr); err != nil {
			return err
		}
		verified = "verified, signed by " + strings.Join(ids, ", ")
	} else {
		i := strings.Index(string(signed), "\n\n")
		if i < 0 {
			return errors.New("channel show: not a channel file")
		}
		docBytes = signed[i+2:]
	}
	doc, err := channel.Parse(docBytes)
	if err != nil {
		return err
	}
	now := time.Now()
	w := e.Stdout
	fmt.Fprintf(w, "%s: %s\ncompatible: %s\nserial:     %d\ncreated:    %s\nexpires:    %s", path, verified, doc.Compatible, doc.Serial,
		doc.Created.Format(time.RFC3339), doc.Expires.Format(time.RFC3339))
	if !now.Before(doc.Expires) {
		fmt.Fprint(w, "  EXPIRED: devices refuse it; run 'channel sign'")
	}
	fmt.Fprintln(w)
	for i := range doc.Releases {
		r := &doc.Releases[i]
		fmt.Fprintf(w, "release %s: version %s, security version %d, %s (%d bytes), %d delta(s)\n  rollout %s\n",
			r.ID, r.Version, r.SecurityVersion, r.Bundle.URL, r.Bundle.Size, len(r.Deltas), describeStages(r, now))
		if r.MinVersion != "" {
			fmt.Fprintf(w, "  forced below version %s\n", r.MinVersion)
		}
		if r.Window != nil {
			fmt.Fprintf(w, "  maintenance window %s-%s device local time\n", r.Window.Start, r.Window.End)
		}
	}
	return nil
}

func channelStats(_ context.Context, e *Env, args []string) error {
	fs := newFlags(e, "channel stats", "REPORTS.jsonl", "Per release: devices reporting, success, rollback and failure rates, and p50/p95\nseconds per phase. Each report id counts once.")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("channel stats: need one REPORTS file")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	all, bad, err := channel.Stats(f)
	if err != nil {
		return err
	}
	w := e.Stdout
	fmt.Fprintf(w, "%-16s %7s %8s %8s %8s  %s\n", "release", "devices", "success", "rollback", "failure", "phase p50/p95 (s)")
	for _, s := range all {
		var ph []string
		names := make([]string, 0, len(s.Phases))
		for k := range s.Phases {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			ph = append(ph, fmt.Sprintf("%s %.1f/%.1f", k, s.Phases[k][0], s.Phases[k][1]))
		}
		fmt.Fprintf(w, "%-16s %7d %7.1f%% %7.1f%% %7.1f%%  %s\n", s.Release, s.Devices,
			s.Rate(s.Success), s.Rate(s.Rollback), s.Rate(s.Failure), strings.Join(ph, ", "))
	}
	if bad > 0 {
		fmt.Fprintf(w, "(%d line(s) skipped: not a report)\n", bad)
	}
	return nil
}
