package extsign

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Object is one private key object as pkcs11-tool --list-objects prints it.
type Object struct {
	Type   string // "RSA", "EC", …
	Label  string
	ID     []byte
	Access string // e.g. "sensitive, always sensitive, never extractable, local"
}

// parseObjects reads pkcs11-tool --list-objects output.
func parseObjects(out []byte) []Object {
	var objs []Object
	var cur *Object
	for _, line := range strings.Split(string(out), "\n") {
		if t, ok := strings.CutPrefix(line, "Private Key Object;"); ok {
			objs = append(objs, Object{Type: strings.TrimSpace(t)})
			cur = &objs[len(objs)-1]
			continue
		}
		if !strings.HasPrefix(line, " ") {
			cur = nil
			continue
		}
		if cur == nil {
			continue
		}
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "label":
			cur.Label = v
		case "ID":
			if id, err := hex.DecodeString(v); err == nil {
				cur.ID = id
			}
		case "Access":
			cur.Access = v
		}
	}
	return objs
}

// PrivateKeys lists the token's private key objects (logged in).
func (p *PKCS11) PrivateKeys(ctx context.Context) ([]Object, error) {
	out, err := p.output(ctx, true, false, "--list-objects", "--type", "privkey")
	if err != nil {
		return nil, err
	}
	return parseObjects(out), nil
}

// resolveID finds the CKA_ID of the URI's private key object. pkcs11-tool
// (OpenSC 0.23) selects the key for --sign and --read-object by --id only
// and silently takes the token's first private key when given just a
// label, so a label is turned into an id here, and an ambiguous or missing
// label is an error instead of a signature by another key.
func (p *PKCS11) resolveID(ctx context.Context) error {
	if len(p.URI.ID) > 0 || p.URI.Object == "" {
		return nil
	}
	objs, err := p.PrivateKeys(ctx)
	if err != nil {
		return err
	}
	var match []Object
	for _, o := range objs {
		if o.Label == p.URI.Object {
			match = append(match, o)
		}
	}
	switch {
	case len(match) == 0:
		return fmt.Errorf("extsign: %s: no private key object labelled %q in the token", p.URI, p.URI.Object)
	case len(match) > 1:
		return fmt.Errorf("extsign: %s: %d private keys are labelled %q; add id= to the URI", p.URI, len(match), p.URI.Object)
	case len(match[0].ID) == 0:
		return fmt.Errorf("extsign: %s: the private key has no CKA_ID, which pkcs11-tool needs to select it (set one with pkcs11-tool --set-id)", p.URI)
	}
	p.URI.ID = match[0].ID
	return nil
}

// output runs pkcs11-tool and returns its stdout+stderr.
func (p *PKCS11) output(ctx context.Context, login, selectObj bool, args ...string) ([]byte, error) {
	var a []string
	if p.Module != "" {
		a = append(a, "--module", p.Module)
	}
	if p.URI.SlotID != "" {
		a = append(a, "--slot", p.URI.SlotID)
	}
	if p.URI.Token != "" {
		a = append(a, "--token-label", p.URI.Token)
	}
	if selectObj && len(p.URI.ID) > 0 {
		a = append(a, "--id", hex.EncodeToString(p.URI.ID))
	}
	env := os.Environ()
	if login {
		if p.pin == "" {
			return nil, fmt.Errorf("extsign: %s: no PIN: set pin-source=file:… in the URI or %s", p.URI, EnvPIN)
		}
		a = append(a, "--login", "--pin", "env:"+pinEnv)
		env = append(env, pinEnv+"="+p.pin)
	}
	a = append(a, args...)
	cmd := exec.CommandContext(ctx, p.Tool, a...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	killGroup(cmd)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("extsign: pkcs11-tool for %s: %w: %s", p.URI, err, tail(out.Bytes()))
	}
	return out.Bytes(), nil
}
