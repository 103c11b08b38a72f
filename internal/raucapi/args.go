package raucapi

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"
)

// ErrInvalidArgs is returned (as dbusapi.ErrInvalidArgs on the bus) for an
// argument dictionary otad refuses.
var ErrInvalidArgs = errors.New("raucapi: invalid argument")

// ErrRefused is returned (as dbusapi.ErrInvalidArgs on the bus) for a RAUC
// argument otad understands but will not follow.
var ErrRefused = errors.New("raucapi: refused")

// callArgs is an InstallBundle or InspectBundle dictionary after checking.
type callArgs struct {
	access Access
	txID   string
}

// maxTxID bounds a caller's transaction id (RAUC uses UUIDs, 36 bytes).
const maxTxID = 128

// refusedTrue lists the boolean arguments otad accepts only as false, and
// why: each would switch off a check otad always makes. RAUC's own client
// sends ignore-compatible=false on every install, so false must pass.
var refusedTrue = map[string]string{
	"ignore-compatible":    "otad always checks the bundle's compatible against the system's",
	"ignore-version-limit": "otad always enforces its version and anti-rollback limits",
	"tls-no-verify":        "otad always verifies the server's TLS certificate",
}

// parseArgs checks a{sv} arguments. install selects InstallBundle's set
// (adds transaction-id and require-manifest-hash) over InspectBundle's.
func parseArgs(in map[string]dbus.Variant, install bool) (callArgs, error) {
	var out callArgs
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := in[k]
		if why, ok := refusedTrue[k]; ok {
			b, ok := v.Value().(bool)
			if !ok {
				return out, typeErr(k, v, "b")
			}
			if b {
				return out, fmt.Errorf("%w: %s=true: %s", ErrRefused, k, why)
			}
			continue
		}
		switch k {
		case "tls-cert", "tls-key", "tls-ca":
			s, err := pathArg(k, v)
			if err != nil {
				return out, err
			}
			switch k {
			case "tls-cert":
				out.access.TLSCert = s
			case "tls-key":
				out.access.TLSKey = s
			default:
				out.access.TLSCA = s
			}
		case "http-headers":
			h, ok := v.Value().([]string)
			if !ok {
				return out, typeErr(k, v, "as")
			}
			for i, line := range h {
				if err := checkHeader(line); err != nil {
					// The line itself is not quoted: it may hold a token.
					return out, fmt.Errorf("%w: http-headers[%d]: %v", ErrInvalidArgs, i, err)
				}
			}
			out.access.Headers = h
		case "transaction-id":
			if !install {
				return out, unsupported(k)
			}
			s, ok := v.Value().(string)
			if !ok {
				return out, typeErr(k, v, "s")
			}
			if s == "" || len(s) > maxTxID || strings.IndexFunc(s, notIDRune) >= 0 {
				return out, fmt.Errorf("%w: transaction-id: want 1..%d characters of letters, digits, '-', '_', '.' or ':'", ErrInvalidArgs, maxTxID)
			}
			out.txID = s
		case "require-manifest-hash":
			if !install {
				return out, unsupported(k)
			}
			return out, fmt.Errorf("%w: require-manifest-hash: otad bundles have no RAUC manifest hash to compare; inspect and install by signature and version instead", ErrRefused)
		default:
			return out, unsupported(k)
		}
	}
	return out, nil
}

func unsupported(k string) error {
	if len(k) > 64 {
		k = k[:64] + "…"
	}
	return fmt.Errorf("%w: unsupported key %q", ErrInvalidArgs, k)
}

func typeErr(k string, v dbus.Variant, want string) error {
	return fmt.Errorf("%w: %s: type %s, want %s", ErrInvalidArgs, k, v.Signature(), want)
}

// pathArg reads a TLS file argument. RAUC also takes PKCS#11 URLs there;
// otad's fetcher reads files, so a URL is refused rather than misread as a
// relative path.
func pathArg(k string, v dbus.Variant) (string, error) {
	s, ok := v.Value().(string)
	if !ok {
		return "", typeErr(k, v, "s")
	}
	if strings.HasPrefix(s, "pkcs11:") {
		return "", fmt.Errorf("%w: %s: PKCS#11 URLs are not supported here; give a file", ErrRefused, k)
	}
	if !strings.HasPrefix(s, "/") {
		return "", fmt.Errorf("%w: %s: want an absolute file path", ErrInvalidArgs, k)
	}
	return s, nil
}

// checkHeader accepts "Name: value" with an RFC 9110 token as the name and
// no control characters (a CR or LF would let a caller inject requests).
func checkHeader(line string) error {
	name, val, ok := strings.Cut(line, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.IndexFunc(name, notTokenRune) >= 0 {
		return errors.New(`want "Name: value"`)
	}
	if strings.IndexFunc(val, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) >= 0 {
		return errors.New("control character in value")
	}
	return nil
}

func notTokenRune(r rune) bool {
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
		return false
	}
	return !strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

func notIDRune(r rune) bool {
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
		return false
	}
	return !strings.ContainsRune("-_.:", r)
}
