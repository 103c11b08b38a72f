package bundle

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Key algorithms. A key's algorithm is fixed by its key file; a signature
// claiming another algorithm for that key id is rejected.
const (
	AlgEd25519 = "ed25519"
	AlgP256    = "p256"
)

// PublicKey is one trusted key of a keyring.
type PublicKey struct {
	ID   string
	Alg  string
	Role string
	key  crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey
}

// PrivateKey signs manifests; it lives on the build host only.
type PrivateKey struct {
	ID   string
	Alg  string
	Role string
	key  crypto.Signer
}

// keyFile is the JSON form of both key files; Key is PKIX (public) or
// PKCS#8 (private) DER, base64 by encoding/json.
type keyFile struct {
	ID   string `json:"id"`
	Alg  string `json:"alg"`
	Role string `json:"role"`
	Key  []byte `json:"key"`
}

var (
	keyFileShape = &shape{fields: map[string]*shape{"id": scalar, "alg": scalar, "role": scalar, "key": scalar}}
	policyShape  = &shape{fields: map[string]*shape{"threshold": scalar, "roles": {elem: scalar}}}
	roleRe       = keyIDRe
)

// GenerateKey makes a new signing key.
func GenerateKey(alg, id, role string, rand io.Reader) (*PrivateKey, error) {
	if err := checkKeyMeta(id, alg, role); err != nil {
		return nil, err
	}
	var signer crypto.Signer
	switch alg {
	case AlgEd25519:
		_, k, err := ed25519.GenerateKey(rand)
		if err != nil {
			return nil, fmt.Errorf("bundle: generate ed25519 key: %w", err)
		}
		signer = k
	case AlgP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand)
		if err != nil {
			return nil, fmt.Errorf("bundle: generate p256 key: %w", err)
		}
		signer = k
	}
	return &PrivateKey{ID: id, Alg: alg, Role: role, key: signer}, nil
}

func checkKeyMeta(id, alg, role string) error {
	if !keyIDRe.MatchString(id) {
		return fmt.Errorf("%w: key id %q must be 1-64 of [A-Za-z0-9._-]", ErrMalformed, id)
	}
	if alg != AlgEd25519 && alg != AlgP256 {
		return fmt.Errorf("%w: key algorithm %q, want %s or %s", ErrMalformed, alg, AlgEd25519, AlgP256)
	}
	if !roleRe.MatchString(role) {
		return fmt.Errorf("%w: key role %q must be 1-64 of [A-Za-z0-9._-]", ErrMalformed, role)
	}
	return nil
}

// Public returns the public half.
func (k *PrivateKey) Public() *PublicKey {
	return &PublicKey{ID: k.ID, Alg: k.Alg, Role: k.Role, key: k.key.Public()}
}

func signedMessage(manifest []byte) []byte {
	return append([]byte(SignaturePrefix), manifest...)
}

// Sign signs manifest bytes (domain-separated by SignaturePrefix).
func (k *PrivateKey) Sign(rand io.Reader, manifest []byte) (Signature, error) {
	msg := signedMessage(manifest)
	s := Signature{KeyID: k.ID, Algorithm: k.Alg}
	switch key := k.key.(type) {
	case ed25519.PrivateKey:
		s.Sig = ed25519.Sign(key, msg)
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(msg)
		r, ss, err := ecdsa.Sign(rand, key, h[:])
		if err != nil {
			return s, fmt.Errorf("bundle: sign with %s: %w", k.ID, err)
		}
		s.Sig = make([]byte, sigSize)
		r.FillBytes(s.Sig[:32])
		ss.FillBytes(s.Sig[32:])
	}
	return s, nil
}

// Verify checks one signature over manifest bytes. It is pure: no I/O.
func (k *PublicKey) Verify(manifest []byte, s Signature) error {
	if s.Algorithm != k.Alg {
		return fmt.Errorf("%w: key %s is %s, signature claims %s", ErrBadSignature, k.ID, k.Alg, s.Algorithm)
	}
	if len(s.Sig) != sigSize {
		return fmt.Errorf("%w: key %s: signature is %d bytes, want %d", ErrBadSignature, k.ID, len(s.Sig), sigSize)
	}
	msg := signedMessage(manifest)
	ok := false
	switch key := k.key.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(key, msg, s.Sig)
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		r := new(big.Int).SetBytes(s.Sig[:32])
		ss := new(big.Int).SetBytes(s.Sig[32:])
		ok = ecdsa.Verify(key, h[:], r, ss)
	}
	if !ok {
		return fmt.Errorf("%w: key %s does not verify the manifest", ErrBadSignature, k.ID)
	}
	return nil
}

// MarshalPrivateKey returns the private key file contents.
func MarshalPrivateKey(k *PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode private key: %w", err)
	}
	return marshalKeyFile(keyFile{ID: k.ID, Alg: k.Alg, Role: k.Role, Key: der})
}

// MarshalPublicKey returns the public key file contents (for a keyring).
func MarshalPublicKey(k *PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k.key)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode public key: %w", err)
	}
	return marshalKeyFile(keyFile{ID: k.ID, Alg: k.Alg, Role: k.Role, Key: der})
}

func marshalKeyFile(f keyFile) ([]byte, error) {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bundle: encode key file: %w", err)
	}
	return append(b, '\n'), nil
}

func parseKeyFile(b []byte) (keyFile, error) {
	var f keyFile
	if err := checkJSONShape(b, keyFileShape); err != nil {
		return f, fmt.Errorf("key file: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: key file: %v", ErrMalformed, err)
	}
	return f, checkKeyMeta(f.ID, f.Alg, f.Role)
}

// ParsePrivateKey parses a private key file.
func ParsePrivateKey(b []byte) (*PrivateKey, error) {
	f, err := parseKeyFile(b)
	if err != nil {
		return nil, err
	}
	raw, err := x509.ParsePKCS8PrivateKey(f.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: private key %s: %v", ErrMalformed, f.ID, err)
	}
	k := &PrivateKey{ID: f.ID, Alg: f.Alg, Role: f.Role}
	switch key := raw.(type) {
	case ed25519.PrivateKey:
		if f.Alg == AlgEd25519 {
			k.key = key
		}
	case *ecdsa.PrivateKey:
		if f.Alg == AlgP256 && key.Curve == elliptic.P256() {
			k.key = key
		}
	}
	if k.key == nil {
		return nil, fmt.Errorf("%w: private key %s: key material is not %s", ErrMalformed, f.ID, f.Alg)
	}
	return k, nil
}

// ParsePublicKey parses a public key file.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	f, err := parseKeyFile(b)
	if err != nil {
		return nil, err
	}
	raw, err := x509.ParsePKIXPublicKey(f.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: public key %s: %v", ErrMalformed, f.ID, err)
	}
	k := &PublicKey{ID: f.ID, Alg: f.Alg, Role: f.Role}
	switch key := raw.(type) {
	case ed25519.PublicKey:
		if f.Alg == AlgEd25519 {
			k.key = key
		}
	case *ecdsa.PublicKey:
		if f.Alg == AlgP256 && key.Curve == elliptic.P256() {
			k.key = key
		}
	}
	if k.key == nil {
		return nil, fmt.Errorf("%w: public key %s: key material is not %s", ErrMalformed, f.ID, f.Alg)
	}
	return k, nil
}

// LoadPrivateKey reads a private key file.
func LoadPrivateKey(path string) (*PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Policy is the k-of-n rule: at least Threshold distinct keys whose role is
// in Roles must sign. Rotation: ship a keyring with old and new keys and
// sign with both during the transition.
type Policy struct {
	Threshold int      `json:"threshold"`
	Roles     []string `json:"roles"`
}

// DefaultPolicy applies when a keyring directory has no policy file.
var DefaultPolicy = Policy{Threshold: 1, Roles: []string{"release"}}

// PolicyFile is the name of the policy file inside a keyring directory;
// public keys are the *.pub files next to it.
const PolicyFile = "policy.json"

// Keyring is the set of keys a device trusts plus its policy.
type Keyring struct {
	Policy Policy
	keys   map[string]*PublicKey
}

// NewKeyring builds a keyring. The same public key under two ids is
// refused: it would let one signer count twice.
func NewKeyring(p Policy, keys ...*PublicKey) (*Keyring, error) {
	if p.Threshold < 1 || len(p.Roles) == 0 {
		return nil, fmt.Errorf("%w: policy needs threshold >= 1 and at least one role", ErrMalformed)
	}
	kr := &Keyring{Policy: p, keys: map[string]*PublicKey{}}
	seen := map[string]string{}
	for _, k := range keys {
		if _, dup := kr.keys[k.ID]; dup {
			return nil, fmt.Errorf("%w: keyring: key id %s twice", ErrMalformed, k.ID)
		}
		der, err := x509.MarshalPKIXPublicKey(k.key)
		if err != nil {
			return nil, fmt.Errorf("%w: keyring: key %s: %v", ErrMalformed, k.ID, err)
		}
		if other, dup := seen[string(der)]; dup {
			return nil, fmt.Errorf("%w: keyring: keys %s and %s are the same key", ErrMalformed, other, k.ID)
		}
		seen[string(der)] = k.ID
		kr.keys[k.ID] = k
	}
	return kr, nil
}

// LoadKeyring reads every *.pub file and the optional policy.json of dir.
func LoadKeyring(dir string) (*Keyring, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, fmt.Errorf("bundle: keyring %s: %w", dir, err)
	}
	sort.Strings(names)
	var keys []*PublicKey
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("bundle: keyring: %w", err)
		}
		k, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("keyring %s: %w", n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: keyring %s holds no *.pub key files", ErrUnknownKey, dir)
	}
	p := DefaultPolicy
	b, err := os.ReadFile(filepath.Join(dir, PolicyFile))
	switch {
	case err == nil:
		if p, err = ParsePolicy(b); err != nil {
			return nil, fmt.Errorf("keyring %s: %w", dir, err)
		}
	case !os.IsNotExist(err):
		return nil, fmt.Errorf("bundle: keyring: %w", err)
	}
	return NewKeyring(p, keys...)
}

// ParsePolicy parses a policy file strictly.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	if err := checkJSONShape(b, policyShape); err != nil {
		return p, fmt.Errorf("policy: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: policy: %v", ErrMalformed, err)
	}
	return p, nil
}

// Keys returns the trusted keys sorted by id.
func (kr *Keyring) Keys() []*PublicKey {
	out := make([]*PublicKey, 0, len(kr.keys))
	for _, k := range kr.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Verify applies the policy to the signatures over manifest and returns
// the ids of the keys that counted. A signature by a trusted key that does
// not verify fails the bundle outright (tampering, not rotation);
// signatures by unknown keys are skipped so old and new keyrings both
// accept a bundle signed during a rotation. Only distinct key ids count,
// never signature bytes.
func (kr *Keyring) Verify(manifest []byte, sigs []Signature) ([]string, error) {
	if kr.Policy.Threshold < 1 {
		// Fail closed: a zero-value Keyring or a lowered Policy must never
		// mean "no signature needed".
		return nil, fmt.Errorf("%w: keyring policy threshold %d; at least 1 signature is always required", ErrThreshold, kr.Policy.Threshold)
	}
	counted := map[string]bool{}
	var unknown, wrongRole []string
	for _, s := range sigs {
		k, ok := kr.keys[s.KeyID]
		if !ok {
			unknown = append(unknown, s.KeyID)
			continue
		}
		if err := k.Verify(manifest, s); err != nil {
			return nil, err
		}
		if !slices.Contains(kr.Policy.Roles, k.Role) {
			wrongRole = append(wrongRole, s.KeyID+" ("+k.Role+")")
			continue
		}
		counted[s.KeyID] = true
	}
	ids := make([]string, 0, len(counted))
	for id := range counted {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) >= kr.Policy.Threshold {
		return ids, nil
	}
	detail := fmt.Sprintf("%d of %d required signatures with role %s", len(ids), kr.Policy.Threshold, strings.Join(kr.Policy.Roles, "|"))
	if len(wrongRole) > 0 {
		detail += "; wrong role: " + strings.Join(wrongRole, ", ")
	}
	if len(unknown) > 0 {
		detail += "; untrusted key ids: " + strings.Join(unknown, ", ")
	}
	if len(ids) == 0 && len(wrongRole) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, detail)
	}
	return nil, fmt.Errorf("%w: %s", ErrThreshold, detail)
}
