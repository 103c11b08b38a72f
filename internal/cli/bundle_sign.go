//go:build !otad_device

package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/bundle/extsign"
)

// signerFlags name one signer whose private key is not a file.
type signerFlags struct {
	uri, cmd, input, pub *string
}

func addSignerFlags(fs *flag.FlagSet) *signerFlags {
	return &signerFlags{
		uri:   fs.String("signer", "", "PKCS#11 URI of a private key in a token (RFC 7512), e.g.\n'pkcs11:token=release;object=oem-2026?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin'\n(module default: $"+extsign.EnvModule+", else "+extsign.DefaultModule+"; PIN default: $"+extsign.EnvPIN+")"),
		cmd:   fs.String("signer-cmd", "", "shell command that reads the bytes to sign on stdin and prints the signature\n(raw, hex or base64; P-256 also DER), e.g. a cloud KMS command line"),
		input: fs.String("signer-input", extsign.InputMessage, "what --signer-cmd gets on stdin: message (the exact signed bytes)\nor digest (their SHA-256, 32 raw bytes; P-256 and RSA only)"),
		pub:   fs.String("pub", "", "keyring .pub file of the --signer/--signer-cmd key (id, role, algorithm;\nevery signature is checked against it before it is written)"),
	}
}

func (s *signerFlags) given() bool { return *s.uri != "" || *s.cmd != "" }

// loadSigners returns the key-file signers, then the external one.
func loadSigners(e *Env, keyPaths []string, ext *signerFlags) ([]bundle.Signer, error) {
	var out []bundle.Signer
	for _, p := range keyPaths {
		k, err := bundle.LoadPrivateKey(p)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	if !ext.given() {
		if *ext.pub != "" {
			return nil, usagef("--pub goes with --signer or --signer-cmd")
		}
		return out, nil
	}
	if *ext.uri != "" && *ext.cmd != "" {
		return nil, usagef("give --signer or --signer-cmd, not both")
	}
	if *ext.pub == "" {
		return nil, usagef("--signer and --signer-cmd need --pub KEY.pub (the key's keyring file)")
	}
	pub, err := loadPublicKey(*ext.pub)
	if err != nil {
		return nil, err
	}
	if *ext.uri != "" {
		p, err := extsign.NewPKCS11(*ext.uri, pub, os.Getenv)
		if err != nil {
			return nil, err
		}
		return append(out, p), nil
	}
	return append(out, &extsign.Command{Line: *ext.cmd, Input: *ext.input, Pub: pub, Stderr: e.Stderr}), nil
}

func loadPublicKey(path string) (*bundle.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := bundle.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// bundlePubkey writes the keyring file of a key that lives in a token or a
// KMS: its public half from the token (--signer) or a PEM/DER file (--in).
func bundlePubkey(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle pubkey", "", "Writes a keyring .pub file for a key whose private half never leaves its token or KMS.\nThe public key comes from the token (--signer) or a PEM/DER SubjectPublicKeyInfo file (--in).")
	uri := fs.String("signer", "", "PKCS#11 URI of the key (reads its public key object)")
	in := fs.String("in", "", "public key file, PEM or DER (e.g. from 'aws kms get-public-key')")
	id := fs.String("id", "", "key id recorded in signatures (required)")
	role := fs.String("role", "release", "role the device policy requires")
	padding := fs.String("rsa-padding", "pss", "for RSA keys: pss or pkcs1v15")
	out := fs.String("o", "", "output .pub file (required)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *id == "" || *out == "" || (*uri == "") == (*in == "") || fs.NArg() != 0 {
		return usagef("bundle pubkey: --id, -o and one of --signer or --in are required")
	}
	var der []byte
	var err error
	if *uri != "" {
		p, perr := extsign.NewPKCS11(*uri, nil, os.Getenv)
		if perr != nil {
			return perr
		}
		der, err = p.ReadPublicKey(ctx)
	} else {
		der, err = os.ReadFile(*in)
		if blk, _ := pem.Decode(der); blk != nil {
			der = blk.Bytes
		}
	}
	if err != nil {
		return err
	}
	raw, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return fmt.Errorf("bundle pubkey: not a SubjectPublicKeyInfo: %w", err)
	}
	var alg string
	switch raw.(type) {
	case *rsa.PublicKey:
		if alg, err = rsaAlg(*padding); err != nil {
			return err
		}
	case *ecdsa.PublicKey:
		alg = bundle.AlgP256 // NewPublicKey refuses other curves
	case ed25519.PublicKey:
		alg = bundle.AlgEd25519
	default:
		return fmt.Errorf("bundle pubkey: %T keys are not supported", raw)
	}
	k, err := bundle.NewPublicKey(*id, alg, *role, der)
	if err != nil {
		return err
	}
	b, err := bundle.MarshalPublicKey(k)
	if err != nil {
		return err
	}
	if err := writeNew(*out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "wrote %s (%s key %q, %d bits, role %s, %s)\n", *out, k.Alg, k.ID, k.Bits(), k.Role, k.Fingerprint())
	return nil
}

// bundleDigest prints what a signature over BUNDLE covers.
func bundleDigest(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle digest", "BUNDLE", "Prints the hex SHA-256 of the signed bytes (what P-256 and RSA signers sign as a\nprehashed digest). --message writes the exact signed bytes (\"otad bundle v1\\\\0\" and the\nmanifest) for signers that hash themselves, and for Ed25519. Signatures are NOT checked.")
	msgOut := fs.String("message", "", "also write the exact signed bytes to this file")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("bundle digest: need one BUNDLE")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := bundle.DigestOf(f)
	if err != nil {
		return err
	}
	if *msgOut != "" {
		if err := writeAtomic(*msgOut, func(w io.Writer) error { _, err := w.Write(d.Message); return err }); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.Stdout, "%x\n", d.SHA256)
	return nil
}

// bundleAttachSignature adds a signature made elsewhere after checking it.
func bundleAttachSignature(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle attach-signature", "BUNDLE", "Adds a signature made elsewhere (over 'bundle digest' output). It is checked against\n--pub over this bundle's manifest first; a signature that does not verify writes nothing.")
	pubPath := fs.String("pub", "", "keyring .pub file of the signing key (required)")
	sigPath := fs.String("signature", "", "signature file, raw, hex or base64 (P-256 also DER); - for stdin (required)")
	out := fs.String("o", "", "write the signed bundle here (default: replace BUNDLE atomically)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *pubPath == "" || *sigPath == "" || fs.NArg() != 1 {
		return usagef("bundle attach-signature: need --pub, --signature and one BUNDLE")
	}
	pub, err := loadPublicKey(*pubPath)
	if err != nil {
		return err
	}
	var sig []byte
	if *sigPath == "-" {
		sig, err = io.ReadAll(io.LimitReader(e.Stdin, 64<<10))
	} else {
		sig, err = os.ReadFile(*sigPath)
	}
	if err != nil {
		return err
	}
	in := fs.Arg(0)
	dst := *out
	if dst == "" {
		dst = in
	}
	err = writeAtomic(dst, func(w io.Writer) error {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		return bundle.AttachSignature(w, f, pub, sig)
	})
	if err != nil {
		return fmt.Errorf("bundle attach-signature %s: %w", in, err)
	}
	fmt.Fprintf(e.Stdout, "%s: signature by %s (%s, role %s) verified and attached\n", dst, pub.ID, pub.Alg, pub.Role)
	return nil
}
