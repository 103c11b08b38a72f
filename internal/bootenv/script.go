package bootenv

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Assignment is one line of an fw_setenv script. An empty Value deletes.
type Assignment struct {
	Name, Value string
}

// ParseScript reads an fw_setenv -s script. Both dialects are accepted:
// u-boot-tools' "name value" (the value is the rest of the line after the
// blanks) and libubootenv's "name=value"; the first blank or '=' separates.
// Empty lines and lines starting with '#' are skipped; a name alone deletes
// the variable. A line without a name is an error, never skipped.
func ParseScript(r io.Reader) ([]Assignment, error) {
	var out []Assignment
	err := eachLine(r, "script", func(n int, line string) error {
		i := strings.IndexAny(line, " \t=")
		if i == 0 {
			if strings.TrimLeft(line, " \t") == "" {
				return nil
			}
			return fmt.Errorf("bootenv: script line %d: no variable name", n)
		}
		a := Assignment{Name: line}
		if i > 0 {
			a.Name = line[:i]
			if line[i] == '=' {
				a.Value = line[i+1:]
			} else {
				a.Value = strings.TrimLeft(line[i:], " \t")
			}
		}
		if !ValidName(a.Name) || strings.IndexByte(a.Value, 0) >= 0 {
			return fmt.Errorf("%w: script line %d", ErrBadName, n)
		}
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachLine calls fn for every line of r that is neither empty nor a '#'
// comment, with its 1-based number and without a trailing CR.
func eachLine(r io.Reader, what string, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("bootenv: %s: %w", what, err)
	}
	return nil
}

// Apply performs the assignments on e in order.
func Apply(e *Env, as []Assignment) {
	for _, a := range as {
		e.Set(a.Name, a.Value)
	}
}

// ParseDefaults reads a default environment in fw_printenv's output format
// ("name=value" lines, as /etc/u-boot-initial-env): '#' comments and empty
// lines are skipped; a line without '=' is an error.
func ParseDefaults(r io.Reader) (*Env, error) {
	e := NewEnv()
	err := eachLine(r, "defaults", func(n int, line string) error {
		name, value, ok := strings.Cut(line, "=")
		if !ok || !ValidName(name) || strings.IndexByte(value, 0) >= 0 {
			return fmt.Errorf("%w: defaults line %d: want name=value", ErrBadName, n)
		}
		e.Set(name, value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}
