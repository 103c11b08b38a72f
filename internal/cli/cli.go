// Package cli maps otad's command line onto the packages that do the work.
//
// One binary serves as daemon and CLI: invoked as "otactl" (argv[0], a
// symlink) it behaves exactly like "otad", so a device carries one Go runtime.
// Every subcommand lives in its own file and is listed in the table in
// commands.go. Errors map to exit codes in one place (Report): usage errors
// exit 2, everything else 1.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// Env is what a subcommand may touch of the process: its streams and its
// name. Tests build one with buffers.
type Env struct {
	Prog   string // "otad" or "otactl"
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *Env, args []string) error
}

// UsageError is a wrong command line: exit status 2.
type UsageError struct{ Msg string }

func (u *UsageError) Error() string { return u.Msg }

func usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// errHelpShown means usage was printed on request; exit 0.
var errHelpShown = errors.New("help shown")

// Run picks the subcommand named by args[1] (args[0] is the program name).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	prog := "otad"
	if len(args) > 0 && filepath.Base(args[0]) == "otactl" {
		prog = "otactl"
	}
	e := &Env{Prog: prog, Stdin: stdin, Stdout: stdout, Stderr: stderr}
	if len(args) < 2 {
		printUsage(e, stderr)
		return usagef("%s: no command given", prog)
	}
	name, rest := args[1], args[2:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c := lookup(rest[0]); c != nil {
				return c.run(ctx, e, []string{"-h"})
			}
			return unknown(e, rest[0])
		}
		printUsage(e, stdout)
		return nil
	}
	c := lookup(name)
	if c == nil {
		return unknown(e, name)
	}
	return c.run(ctx, e, rest)
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func unknown(e *Env, name string) error {
	names := make([]string, 0, len(commands))
	for _, c := range commands {
		names = append(names, c.name)
	}
	sort.Strings(names)
	return usagef("%s: unknown command %q; valid commands: %s (see '%s help')",
		e.Prog, name, strings.Join(names, ", "), e.Prog)
}

func printUsage(e *Env, w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [flags] [args]\n\n", e.Prog)
	fmt.Fprintf(w, "otad installs signed update bundles into the inactive A/B slot and\nconfirms or rolls back after the reboot.\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> -h' for the flags of one command.\n", e.Prog)
}

// newFlags makes a FlagSet whose errors come back as UsageError and whose
// -h prints usage to stdout and exits 0.
func newFlags(e *Env, name, argsSyntax, desc string) *flag.FlagSet {
	fs := flag.NewFlagSet(e.Prog+" "+name, flag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s %s [flags] %s\n\n%s\n", e.Prog, name, argsSyntax, desc)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(fs.Output(), "\nflags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args; -h prints usage to stdout.
func parseFlags(e *Env, fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(e.Stdout)
			fs.Usage()
			return errHelpShown
		}
		if a == "--" {
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	return nil
}

// Report prints err (if any) and returns the process exit status.
func Report(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelpShown) {
		return 0
	}
	fmt.Fprintln(stderr, "error:", err)
	var u *UsageError
	if errors.As(err, &u) {
		return 2
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}
