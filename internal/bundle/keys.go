package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/otadev/otad/internal/crypt"
)

// Key algorithms. A key's algorithm is fixed by its key file; a signature
// claiming another algorithm for that key id is rejected.
const (
	AlgEd25519 = "ed25519"
	AlgP256    = "p256"
	// RSA keys carry their padding in the algorithm, so one key signs with
	// exactly one scheme and a signature claiming the other is refused
	// (no padding downgrade). Both hash with SHA-256; PSS uses MGF1-SHA-256
	// and a 32-byte salt. Sizes: 2048, 3072 or 4096 bits.
	AlgRSAPSS   = "rsa-pss-sha256"
	AlgRSAPKCS1 = "rsa-pkcs1v15-sha256"
)

// isRSA reports whether alg is one of the RSA algorithms.
func isRSA(alg string) bool { return alg == AlgRSAPSS || alg == AlgRSAPKCS1 }

// PublicKey is one trusted key of a keyring.
type PublicKey struct {
	ID   string
	Alg  string
	Role string
	key  crypto.PublicKey // ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey
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
	policyShape  = &shape{fields: map[string]*shape{"threshold": scalar, "roles": {elem: scalar}, "require": {values: scalar}}}
	roleRe       = keyIDRe
)

// GenerateKey makes a new Ed25519 or P-256 signing key (RSA keys:
// GenerateRSAKey).
func GenerateKey(alg, id, role string, rand io.Reader) (*PrivateKey, error) {
	if err := checkKeyMeta(id, alg, role); err != nil {
		return nil, err
	}
	if isRSA(alg) {
		return nil, fmt.Errorf("%w: %s keys need a size: use GenerateRSAKey", ErrMalformed, alg)
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
	if alg != AlgEd25519 && alg != AlgP256 && !isRSA(alg) {
		return fmt.Errorf("%w: key algorithm %q, want %s, %s, %s or %s", ErrMalformed, alg, AlgEd25519, AlgP256, AlgRSAPSS, AlgRSAPKCS1)
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
	s := Signature{KeyID: k.ID, Algorithm: k.Alg}
	sig, err := k.signMessage(rand, signedMessage(manifest))
	if err != nil {
		return s, err
	}
	s.Sig = sig
	if isRSA(k.Alg) {
		s.KeyHash = k.Public().keyHash()
	}
	return s, nil
}

// signMessage signs msg in the signature block's encoding.
func (k *PrivateKey) signMessage(rand io.Reader, msg []byte) ([]byte, error) {
	switch key := k.key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(key, msg), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(msg)
		r, ss, err := ecdsa.Sign(rand, key, h[:])
		if err != nil {
			return nil, fmt.Errorf("bundle: sign with %s: %w", k.ID, err)
		}
		sig := make([]byte, sigSize)
		r.FillBytes(sig[:32])
		ss.FillBytes(sig[32:])
		return sig, nil
	case *rsa.PrivateKey:
		h := sha256.Sum256(msg)
		var sig []byte
		var err error
		if k.Alg == AlgRSAPSS {
			sig, err = rsa.SignPSS(rand, key, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(nil, key, crypto.SHA256, h[:])
		}
		if err != nil {
			return nil, fmt.Errorf("bundle: sign with %s: %w", k.ID, err)
		}
		return sig, nil
	}
	return nil, fmt.Errorf("%w: key %s has no private key material", ErrMalformed, k.ID)
}

// Verify checks one signature over manifest bytes. It is pure: no I/O.
// An RSA signature's KeyHash must name this key's exact public key: the
// key id is bound to the modulus. (A bundle's signature block always
// carries it; other signed documents whose envelope has no room for it
// pass nil, and then the keyring's key for the id decides alone.)
func (k *PublicKey) Verify(manifest []byte, s Signature) error {
	if s.Algorithm != k.Alg {
		return fmt.Errorf("%w: key %s is %s, signature claims %s", ErrBadSignature, k.ID, k.Alg, s.Algorithm)
	}
	if isRSA(k.Alg) && s.KeyHash != nil {
		if want := k.keyHash(); !bytes.Equal(s.KeyHash, want) {
			return fmt.Errorf("%w: signature by key id %s was made with key SHA256:%x, the keyring's %s is %s (another modulus under the same id)",
				ErrBadSignature, k.ID, s.KeyHash, k.ID, k.Fingerprint())
		}
	}
	return k.VerifyMessage(signedMessage(manifest), s.Sig)
}

// VerifyMessage checks a raw signature (the block's encoding: Ed25519 64
// bytes, P-256 r||s, RSA modulus-sized) over msg exactly as given, with no
// domain prefix added: callers that sign other documents with keyring
// keys bring their own prefix. It re-checks the key's strength. Pure.
func (k *PublicKey) VerifyMessage(msg, sig []byte) error {
	ok := false
	switch key := k.key.(type) {
	case ed25519.PublicKey:
		ok = len(sig) == sigSize && ed25519.Verify(key, msg, sig)
	case *ecdsa.PublicKey:
		if len(sig) == sigSize {
			h := sha256.Sum256(msg)
			r := new(big.Int).SetBytes(sig[:32])
			ss := new(big.Int).SetBytes(sig[32:])
			ok = ecdsa.Verify(key, h[:], r, ss)
		}
	case *rsa.PublicKey:
		if err := checkRSAPublic(key); err != nil {
			return fmt.Errorf("key %s: %w", k.ID, err)
		}
		if len(sig) != key.Size() {
			return fmt.Errorf("%w: key %s: signature is %d bytes, RSA-%d signatures are %d", ErrBadSignature, k.ID, len(sig), key.N.BitLen(), key.Size())
		}
		h := sha256.Sum256(msg)
		var err error
		if k.Alg == AlgRSAPSS {
			err = rsa.VerifyPSS(key, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(key, crypto.SHA256, h[:], sig)
		}
		ok = err == nil
	}
	if !ok {
		return fmt.Errorf("%w: key %s (%s) does not verify the signed bytes", ErrBadSignature, k.ID, k.Alg)
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
	case *rsa.PrivateKey:
		if isRSA(f.Alg) {
			if err := checkRSAPublic(&key.PublicKey); err != nil {
				return nil, fmt.Errorf("private key %s: %w", f.ID, err)
			}
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
	return NewPublicKey(f.ID, f.Alg, f.Role, f.Key)
}

// NewPublicKey makes a keyring key from PKIX (SubjectPublicKeyInfo) DER,
// e.g. exported from an HSM or a cloud KMS. The DER must be the algorithm
// alg names; RSA keys must pass the strength checks (2048, 3072 or 4096
// bits, odd exponent ≥ 65537).
func NewPublicKey(id, alg, role string, der []byte) (*PublicKey, error) {
	if err := checkKeyMeta(id, alg, role); err != nil {
		return nil, err
	}
	raw, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: public key %s: %v", ErrMalformed, id, err)
	}
	k := &PublicKey{ID: id, Alg: alg, Role: role}
	switch key := raw.(type) {
	case ed25519.PublicKey:
		if alg == AlgEd25519 {
			k.key = key
		}
	case *ecdsa.PublicKey:
		if alg == AlgP256 && key.Curve == elliptic.P256() {
			k.key = key
		}
	case *rsa.PublicKey:
		if isRSA(alg) {
			if err := checkRSAPublic(key); err != nil {
				return nil, fmt.Errorf("public key %s: %w", id, err)
			}
			k.key = key
		}
	}
	if k.key == nil {
		return nil, fmt.Errorf("%w: public key %s: key material is not %s", ErrMalformed, id, alg)
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
// in Roles must sign, and, per role named in Require, at least that many of
// those keys must have that role (co-signing: {"engineering":1,"oem":1}
// needs one of each, so two engineering keys never stand in for the OEM).
// Rotation: ship a keyring with old and new keys and sign with both during
// the transition.
type Policy struct {
	Threshold int            `json:"threshold"`
	Roles     []string       `json:"roles"`
	Require   map[string]int `json:"require,omitempty"`
}

// check refuses a policy that could be read two ways: a required role
// outside Roles, a count below 1, or a threshold below what Require
// already demands.
func (p Policy) check() error {
	sum := 0
	for _, r := range slices.Sorted(maps.Keys(p.Require)) {
		n := p.Require[r]
		if !roleRe.MatchString(r) {
			return fmt.Errorf("%w: policy: required role %q must be 1-64 of [A-Za-z0-9._-]", ErrMalformed, r)
		}
		if n < 1 {
			return fmt.Errorf("%w: policy: require %s: %d, want >= 1 (leave the role out instead)", ErrMalformed, r, n)
		}
		if !slices.Contains(p.Roles, r) {
			return fmt.Errorf("%w: policy: role %s is required but not in roles %v", ErrMalformed, r, p.Roles)
		}
		sum += n
	}
	if p.Threshold < 1 || len(p.Roles) == 0 {
		return fmt.Errorf("%w: policy needs threshold >= 1 and at least one role", ErrMalformed)
	}
	if sum > p.Threshold {
		return fmt.Errorf("%w: policy: threshold %d is below the %d signatures require demands", ErrMalformed, p.Threshold, sum)
	}
	return nil
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
	// Decryption is the device's key for encrypted bundles (encrypt.go);
	// nil: encrypted bundles are refused before any payload byte.
	Decryption *crypt.PrivateKey
}

// NewKeyring builds a keyring. The same public key under two ids is
// refused: it would let one signer count twice.
func NewKeyring(p Policy, keys ...*PublicKey) (*Keyring, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	kr := &Keyring{Policy: p, keys: map[string]*PublicKey{}}
	seen := map[string]string{}
	for _, k := range keys {
		if rk, ok := k.key.(*rsa.PublicKey); ok {
			if err := checkRSAPublic(rk); err != nil {
				return nil, fmt.Errorf("keyring: key %s: %w", k.ID, err)
			}
		}
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

// ParsePolicy parses a policy file strictly. With "require", an omitted
// "threshold" is the sum of the required counts and omitted "roles" are
// the required roles, so {"require":{"engineering":1,"oem":1}} alone means
// one of each.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	if err := checkJSONShape(b, policyShape); err != nil {
		return p, fmt.Errorf("policy: %w", err)
	}
	var present map[string]json.RawMessage
	if err := json.Unmarshal(b, &present); err != nil {
		return p, fmt.Errorf("%w: policy: %v", ErrMalformed, err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: policy: %v", ErrMalformed, err)
	}
	if len(p.Require) > 0 {
		if _, ok := present["roles"]; !ok {
			p.Roles = slices.Sorted(maps.Keys(p.Require))
		}
		if _, ok := present["threshold"]; !ok {
			for _, n := range p.Require {
				p.Threshold += max(n, 0)
			}
		}
	}
	return p, p.check()
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
	counted := map[string]string{} // key id → role
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
		counted[s.KeyID] = k.Role
	}
	ids := slices.Sorted(maps.Keys(counted))
	perRole := map[string]int{}
	for _, role := range counted {
		perRole[role]++
	}
	// Every short role is named: the refusal says whose signature is
	// missing, not only how many.
	var short []string
	for _, role := range slices.Sorted(maps.Keys(kr.Policy.Require)) {
		if need := kr.Policy.Require[role]; perRole[role] < need {
			short = append(short, fmt.Sprintf("role %s has %d of %d required signatures", role, perRole[role], need))
		}
	}
	if len(ids) >= kr.Policy.Threshold && len(short) == 0 {
		return ids, nil
	}
	var parts []string
	if len(short) > 0 {
		parts = append(parts, "missing: "+strings.Join(short, ", "))
	}
	parts = append(parts, fmt.Sprintf("%d of %d required signatures with role %s", len(ids), kr.Policy.Threshold, strings.Join(kr.Policy.Roles, "|")))
	if len(ids) > 0 {
		var signed []string
		for _, id := range ids {
			signed = append(signed, id+" ("+counted[id]+")")
		}
		parts = append(parts, "counted: "+strings.Join(signed, ", "))
	}
	if len(wrongRole) > 0 {
		parts = append(parts, "wrong role: "+strings.Join(wrongRole, ", "))
	}
	if len(unknown) > 0 {
		parts = append(parts, "untrusted key ids: "+strings.Join(unknown, ", "))
	}
	detail := strings.Join(parts, "; ")
	if len(ids) == 0 && len(wrongRole) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, detail)
	}
	return nil, fmt.Errorf("%w: %s", ErrThreshold, detail)
}
