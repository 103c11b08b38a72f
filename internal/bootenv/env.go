package bootenv

import (
	"sort"
	"strings"
)

// Env is a set of U-Boot variables. The zero value is not usable; use NewEnv.
// Names are kept sorted, as U-Boot's own export writes them, so encoding an
// Env is deterministic.
type Env struct {
	vars map[string]string
}

// NewEnv returns an empty environment.
func NewEnv() *Env { return &Env{vars: make(map[string]string)} }

// Get returns the value of name and whether it is set.
func (e *Env) Get(name string) (string, bool) {
	v, ok := e.vars[name]
	return v, ok
}

// Set sets name to value. U-Boot has no empty variables: setting "" is the
// same as Unset, as in fw_setenv and U-Boot's setenv.
func (e *Env) Set(name, value string) {
	if value == "" {
		delete(e.vars, name)
		return
	}
	e.vars[name] = value
}

// Unset removes name.
func (e *Env) Unset(name string) { delete(e.vars, name) }

// Len is the number of variables.
func (e *Env) Len() int { return len(e.vars) }

// Names returns the variable names, sorted.
func (e *Env) Names() []string {
	names := make([]string, 0, len(e.vars))
	for n := range e.vars {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Clone returns an independent copy.
func (e *Env) Clone() *Env {
	c := NewEnv()
	for k, v := range e.vars {
		c.vars[k] = v
	}
	return c
}

// Equal reports whether both hold exactly the same variables.
func (e *Env) Equal(o *Env) bool {
	if len(e.vars) != len(o.vars) {
		return false
	}
	for k, v := range e.vars {
		if ov, ok := o.vars[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// String renders the environment as fw_printenv does: "name=value" lines.
func (e *Env) String() string {
	var b strings.Builder
	for _, n := range e.Names() {
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(e.vars[n])
		b.WriteByte('\n')
	}
	return b.String()
}

// ValidName reports whether U-Boot accepts name as a variable name: not
// empty, no '=', no NUL.
func ValidName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "=\x00")
}
