package extsign

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// URI is a parsed PKCS#11 URI (RFC 7512) naming one private key object.
type URI struct {
	Token      string // token label (path attribute "token")
	Object     string // object label ("object")
	ID         []byte // object id ("id"), percent-decoded bytes
	SlotID     string // "slot-id"
	ModulePath string // query "module-path"
	PINValue   string // query "pin-value"
	PINSource  string // query "pin-source" (a file path; "file:" prefix allowed)
}

// ParseURI parses "pkcs11:token=…;object=…?module-path=…&pin-source=…".
// Attributes pkcs11-tool cannot select by (serial, manufacturer, model,
// library-*) are refused rather than ignored, so a URI never silently
// matches another token than it names. Errors never repeat the query part
// (it may hold a PIN).
func ParseURI(s string) (*URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, fmt.Errorf("extsign: %q is not a PKCS#11 URI (want pkcs11:token=…;object=…)", Redact(s))
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	seen := map[string]bool{}
	attr := func(part string) (string, string, error) {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return "", "", fmt.Errorf("extsign: PKCS#11 URI attribute %q: want name=value", k)
		}
		if seen[k] {
			return "", "", fmt.Errorf("extsign: PKCS#11 URI attribute %s given twice", k)
		}
		seen[k] = true
		dv, err := url.PathUnescape(v)
		if err != nil {
			return "", "", fmt.Errorf("extsign: PKCS#11 URI attribute %s: bad percent-encoding", k)
		}
		return k, dv, nil
	}
	for _, part := range strings.Split(path, ";") {
		if part == "" {
			continue
		}
		k, v, err := attr(part)
		if err != nil {
			return nil, err
		}
		switch k {
		case "token":
			u.Token = v
		case "object":
			u.Object = v
		case "id":
			u.ID = []byte(v)
		case "slot-id":
			u.SlotID = v
		case "type":
			if v != "private" {
				return nil, fmt.Errorf("extsign: PKCS#11 URI type=%s: signing needs type=private (or no type)", v)
			}
		default:
			return nil, fmt.Errorf("extsign: PKCS#11 URI attribute %q is not supported (use token, object, id, slot-id, type)", k)
		}
	}
	for _, part := range strings.Split(query, "&") {
		if part == "" {
			continue
		}
		k, v, err := attr(part)
		if err != nil {
			return nil, err
		}
		switch k {
		case "module-path":
			u.ModulePath = v
		case "pin-value":
			u.PINValue = v
		case "pin-source":
			u.PINSource = strings.TrimPrefix(v, "file:")
		default:
			return nil, fmt.Errorf("extsign: PKCS#11 URI query attribute %q is not supported (use module-path, pin-value, pin-source)", k)
		}
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, fmt.Errorf("extsign: PKCS#11 URI %s names no key: give object= or id=", Redact(s))
	}
	return u, nil
}

// Redact returns s without its query part (module path, PIN) for error
// messages and logs.
func Redact(s string) string {
	p, _, cut := strings.Cut(s, "?")
	if cut {
		return p + "?…"
	}
	return p
}

// String is the URI's path part, safe to print.
func (u *URI) String() string {
	var parts []string
	for _, kv := range [][2]string{{"token", u.Token}, {"object", u.Object}, {"slot-id", u.SlotID}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+url.PathEscape(kv[1]))
		}
	}
	if len(u.ID) > 0 {
		var b strings.Builder
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02X", c)
		}
		parts = append(parts, "id="+b.String())
	}
	slices.Sort(parts)
	return "pkcs11:" + strings.Join(parts, ";")
}
