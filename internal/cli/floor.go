package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
)

// cmdFloor shows the anti-rollback floor and its copies, and lets an
// operator set it again when no copy is valid (otad then refuses every
// install). It works on the files directly, as root, like `otad env set`.
func cmdFloor(ctx context.Context, e *Env, args []string) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s floor show [-config FILE]\n", e.Prog)
		fmt.Fprintf(w, "       %s floor reset [-config FILE] --to N\n", e.Prog)
		fmt.Fprintf(w, "\nThe anti-rollback floor: bundles below it are refused. reset writes both copies\n")
		fmt.Fprintf(w, "(use it when otad reports no valid copy; N is the highest security_version ever installed).\n")
	}
	if len(args) == 0 {
		usage(e.Stderr)
		return usagef("%s floor: missing subcommand (show, reset)", e.Prog)
	}
	switch args[0] {
	case "show":
		return floorShow(e, args[1:])
	case "reset":
		return floorReset(e, args[1:])
	case "-h", "-help", "--help", "help":
		usage(e.Stdout)
		return errHelpShown
	}
	usage(e.Stderr)
	return usagef("%s floor: unknown subcommand %q (show, reset)", e.Prog, args[0])
}

// openFloor is the daemon's floor store for the configured data directory,
// with the journal's committed security version as its lower bound.
func openFloor(cfgPath string) (*floor.Store, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	s := floor.New(cfg.DataDir)
	j := &journal.Journal{FS: s.FS, Dir: cfg.DataDir}
	var names []string
	for _, sl := range cfg.Slots {
		names = append(names, sl.Name)
	}
	s.Lower = floor.JournalBound(j, names...)
	return s, nil
}

func floorShow(e *Env, args []string) error {
	fs := newFlags(e, "floor show", "", "Print the effective floor, the journal's lower bound and any damaged copy.")
	cfgPath := fs.String("config", config.DefaultPath, "system configuration `file`")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("floor show takes no arguments")
	}
	s, err := openFloor(*cfgPath)
	if err != nil {
		return err
	}
	h, err := s.Check()
	for _, d := range h.Damaged {
		fmt.Fprintf(e.Stdout, "damaged: %s\n", d)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "floor: %d\njournal: %d\n", h.Floor, h.Lower)
	return nil
}

func floorReset(e *Env, args []string) error {
	fs := newFlags(e, "floor reset", "--to N", "Write N into both floor copies, whatever they hold. Reads never go below\nwhat the journal records as committed.")
	cfgPath := fs.String("config", config.DefaultPath, "system configuration `file`")
	to := fs.String("to", "", "the new floor (a bundle security_version)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *to == "" {
		return usagef("floor reset: need --to N")
	}
	n, err := strconv.ParseUint(*to, 10, 64)
	if err != nil {
		return usagef("floor reset: --to: not a number: %q", *to)
	}
	s, err := openFloor(*cfgPath)
	if err != nil {
		return err
	}
	if err := s.Reset(n); err != nil {
		return err
	}
	v, err := s.Get()
	if err != nil {
		return err
	}
	if v > n {
		fmt.Fprintf(e.Stderr, "note: the journal records a commit at security version %d, so the floor reads %d\n", v, v)
	}
	fmt.Fprintf(e.Stdout, "floor: %d\n", v)
	return nil
}
