package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/bootenv"
)

// cmdEnv is fw_printenv / fw_setenv in otad: same config file, same output
// ("name=value", -n for the value alone), same script syntax, same lock.
func cmdEnv(ctx context.Context, e *Env, args []string) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s env print [-c CFG] [-n] [NAME...]\n", e.Prog)
		fmt.Fprintf(w, "       %s env set [-c CFG] NAME [VALUE...]    (no VALUE deletes NAME)\n", e.Prog)
		fmt.Fprintf(w, "       %s env set [-c CFG] -s SCRIPT          (\"name value\" or \"name=value\" lines, - = stdin)\n", e.Prog)
		fmt.Fprintf(w, "       %s env init [-c CFG] [-f DEFAULTS] [-force]\n", e.Prog)
		fmt.Fprintf(w, "\nReads and writes the U-Boot environment described by %s, like fw_printenv/fw_setenv.\n", bootenv.DefaultConfigPath)
	}
	if len(args) == 0 {
		usage(e.Stderr)
		return usagef("%s env: missing subcommand (print, set, init)", e.Prog)
	}
	switch args[0] {
	case "print":
		return envPrint(e, args[1:])
	case "set":
		return envSet(e, args[1:])
	case "init":
		return envInit(e, args[1:])
	case "-h", "-help", "--help", "help":
		usage(e.Stdout)
		return errHelpShown
	}
	usage(e.Stderr)
	return usagef("%s env: unknown subcommand %q (print, set, init)", e.Prog, args[0])
}

func openEnvStore(cfgPath string) (*bootenv.DeviceStore, error) {
	cfg, err := bootenv.LoadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	return bootenv.OpenStore(cfg)
}

func noValidHint(err error) error {
	if errors.Is(err, bootenv.ErrNoValidCopy) {
		return fmt.Errorf("%w; a factory-fresh device needs 'otad env init' once", err)
	}
	return err
}

func envPrint(e *Env, args []string) error {
	fs := newFlags(e, "env print", "[NAME...]", "Print all variables, or the named ones, as name=value.")
	cfgPath := fs.String("c", bootenv.DefaultConfigPath, "fw_env.config `file`")
	noHeader := fs.Bool("n", false, "print only the value")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *noHeader && fs.NArg() == 0 {
		return usagef("env print: -n needs a variable name")
	}
	s, err := openEnvStore(*cfgPath)
	if err != nil {
		return err
	}
	defer s.Close()
	env, err := s.Load()
	if err != nil {
		return noValidHint(err)
	}
	if fs.NArg() == 0 {
		_, err := io.WriteString(e.Stdout, env.String())
		return err
	}
	var b strings.Builder
	for _, name := range fs.Args() {
		// Like fw_printenv: an unset variable prints as empty.
		v, _ := env.Get(name)
		if *noHeader {
			fmt.Fprintf(&b, "%s\n", v)
		} else {
			fmt.Fprintf(&b, "%s=%s\n", name, v)
		}
	}
	_, err = io.WriteString(e.Stdout, b.String())
	return err
}

func warnSingle(e *Env, s *bootenv.DeviceStore) {
	if !s.Redundant() {
		fmt.Fprintln(e.Stderr, "warning: single-copy U-Boot environment: a power cut during this write can lose it (configure a redundant copy in fw_env.config)")
	}
}

func envSet(e *Env, args []string) error {
	fs := newFlags(e, "env set", "NAME [VALUE...] | -s SCRIPT",
		"Set NAME to VALUE (several VALUE words are joined by one space), delete NAME without VALUE,\nor apply a script of \"name value\" lines in one write.")
	cfgPath := fs.String("c", bootenv.DefaultConfigPath, "fw_env.config `file`")
	script := fs.String("s", "", "script `file` (- for stdin)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	var as []bootenv.Assignment
	switch {
	case *script != "" && fs.NArg() > 0:
		return usagef("env set: -s and NAME are exclusive")
	case *script != "":
		r := e.Stdin
		if *script != "-" {
			f, err := os.Open(*script)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		var err error
		if as, err = bootenv.ParseScript(r); err != nil {
			return err
		}
	case fs.NArg() == 0:
		return usagef("env set: need NAME [VALUE] or -s SCRIPT")
	default:
		name := fs.Arg(0)
		if !bootenv.ValidName(name) {
			return usagef("env set: illegal character '=' in variable name %q", name)
		}
		as = []bootenv.Assignment{{Name: name, Value: strings.Join(fs.Args()[1:], " ")}}
	}
	s, err := openEnvStore(*cfgPath)
	if err != nil {
		return err
	}
	defer s.Close()
	warnSingle(e, s)
	return noValidHint(bootenv.Update(s, func(env *bootenv.Env) error {
		bootenv.Apply(env, as)
		return nil
	}))
}

// defaultInitialEnv is where Yocto's u-boot recipe installs the board's
// default environment (fw_printenv falls back to it, too).
const defaultInitialEnv = "/etc/u-boot-initial-env"

func envInit(e *Env, args []string) error {
	fs := newFlags(e, "env init", "",
		"Factory step: write a fresh environment to every copy: the defaults file\n(name=value lines) plus otad's boot variables where the file has none.\nRefuses to overwrite a valid environment without -force.")
	cfgPath := fs.String("c", bootenv.DefaultConfigPath, "fw_env.config `file`")
	defaults := fs.String("f", "", "defaults `file` (default "+defaultInitialEnv+" if present)")
	force := fs.Bool("force", false, "overwrite a valid environment")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("env init: unexpected arguments %q", fs.Args())
	}
	env := bootenv.NewEnv()
	path := *defaults
	if path == "" {
		if _, err := os.Stat(defaultInitialEnv); err == nil {
			path = defaultInitialEnv
		}
	}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		env, err = bootenv.ParseDefaults(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	for k, v := range map[string]string{
		boot.VarSlot: boot.DefaultSlot, boot.VarPrev: boot.DefaultSlot, boot.VarUpgrade: "0",
		boot.VarBootCount: "0", boot.VarBootLimit: fmt.Sprint(boot.DefaultBootLimit), boot.VarAltBootCmd: boot.AltBootCmd,
	} {
		if _, ok := env.Get(k); !ok {
			env.Set(k, v)
		}
	}
	s, err := openEnvStore(*cfgPath)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Load(); err == nil && !*force {
		return fmt.Errorf("env init: %s holds a valid environment; use -force to replace it", *cfgPath)
	} else if err != nil && !errors.Is(err, bootenv.ErrNoValidCopy) {
		return err
	}
	warnSingle(e, s)
	if err := s.Init(env); err != nil {
		return err
	}
	fmt.Fprintf(e.Stderr, "env init: wrote %d variables to %d cop%s\n", env.Len(), map[bool]int{false: 1, true: 2}[s.Redundant()], map[bool]string{false: "y", true: "ies"}[s.Redundant()])
	return nil
}
