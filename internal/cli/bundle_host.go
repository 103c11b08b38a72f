//go:build !otad_device

package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/delta"
	"github.com/otadev/otad/internal/journal"
)

func bundleKeygen(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle keygen", "", "Writes PREFIX.key (private, mode 0600, keep it off devices) and PREFIX.pub\n(copy into the device keyring directory, e.g. /etc/otad/keys).")
	alg := fs.String("alg", bundle.AlgEd25519, "key algorithm: ed25519, p256, rsa2048, rsa3072 or rsa4096")
	padding := fs.String("rsa-padding", "pss", "RSA signature scheme: pss (RSASSA-PSS) or pkcs1v15 (PKCS#1 v1.5), both SHA-256")
	id := fs.String("id", "", "key id recorded in signatures (required), e.g. release-2026")
	role := fs.String("role", "release", "role the device policy requires")
	out := fs.String("o", "", "output PREFIX (required)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *id == "" || *out == "" || fs.NArg() != 0 {
		return usagef("bundle keygen: --id and -o are required, no arguments")
	}
	var k *bundle.PrivateKey
	var err error
	if bits, ok := strings.CutPrefix(*alg, "rsa"); ok {
		ralg, perr := rsaAlg(*padding)
		if perr != nil {
			return perr
		}
		n, _ := strconv.Atoi(bits)
		k, err = bundle.GenerateRSAKey(n, ralg, *id, *role)
	} else {
		k, err = bundle.GenerateKey(*alg, *id, *role, rand.Reader)
	}
	if err != nil {
		return err
	}
	priv, err := bundle.MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := bundle.MarshalPublicKey(k.Public())
	if err != nil {
		return err
	}
	// Never overwrite a signing key, and never leave half a pair behind.
	for _, ext := range []string{".key", ".pub"} {
		if _, err := os.Lstat(*out + ext); err == nil {
			return fmt.Errorf("bundle keygen: %s exists, not overwriting", *out+ext)
		}
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{*out + ".key", priv, 0o600}, {*out + ".pub", pub, 0o644}} {
		if err := writeNew(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.Stdout, "wrote %s.key (private) and %s.pub (%s key %q, %s, %d bits, role %s, %s)\n", *out, *out, *alg, *id, k.Alg, k.Public().Bits(), *role, k.Public().Fingerprint())
	return nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeAtomic creates path via a temporary file in the same directory,
// renamed into place only after fn succeeded and the data is synced, then
// the directory synced (journal.WriteAtomic).
func writeAtomic(path string, fn func(io.Writer) error) error {
	err := journal.WriteAtomic(journal.OSFS{}, path, fn)
	if err != nil {
		os.Remove(path + ".tmp") // a half-written output is no use to anyone
	}
	return err
}

// rsaAlg maps --rsa-padding to the key algorithm.
func rsaAlg(padding string) (string, error) {
	switch padding {
	case "pss":
		return bundle.AlgRSAPSS, nil
	case "pkcs1v15", "pkcs1":
		return bundle.AlgRSAPKCS1, nil
	}
	return "", usagef("--rsa-padding %q: want pss or pkcs1v15", padding)
}

// parseExpiry accepts RFC 3339 or a duration from now ("720h").
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires %q: want RFC 3339 (2027-01-01T00:00:00Z) or a duration (720h)", s)
	}
	return t, nil
}

func bundleCreate(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle create", "", "Builds a signed bundle. Each --image is CLASS=FILE (slot class, e.g. rootfs).")
	compatible := fs.String("compatible", "", "device compatible string (required)")
	version := fs.String("version", "", "release version (required)")
	secver := fs.Uint64("security-version", 0, "anti-rollback security version")
	expires := fs.String("expires", "", "expiry: RFC 3339 time or duration from now (default: never)")
	compress := fs.String("compress", "zstd", "payload compression: zstd or none")
	chunk := fs.String("chunk-size", "1M", "chunk size, power of two from 4K to 8M")
	out := fs.String("o", "", "output bundle path (required)")
	var images, keyPaths, deltaFrom listFlag
	fs.Var(&images, "image", "CLASS=FILE, repeatable")
	fs.Var(&deltaFrom, "delta-from", "OLD.img (single image) or CLASS=OLD.img: ship a delta from the image\ninstalled on devices; falls back to the full image when not smaller")
	fs.Var(&keyPaths, "key", "private key file, repeatable (each adds a signature)")
	unmapped := fs.Bool("delta-unmapped", false, "make deltas for devices whose slots cannot be mapped or read back while written\n(MTD, UBI volumes): LZ dictionaries of at most 8 MiB of the old image only")
	ext := addSignerFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *compatible == "" || *version == "" || *out == "" || len(images) == 0 || (len(keyPaths) == 0 && !ext.given()) || fs.NArg() != 0 {
		return usagef("bundle create: --compatible, --version, --image, --key (or --signer/--signer-cmd with --pub) and -o are required")
	}
	o := bundle.CreateOptions{Compatible: *compatible, Version: *version, SecurityVersion: *secver,
		Created: time.Now(), TempDir: filepath.Dir(*out)}
	var err error
	if o.ChunkSize, err = parseSize(*chunk); err != nil {
		return usagef("bundle create: --chunk-size: %v", err)
	}
	if *expires != "" {
		if o.Expires, err = parseExpiry(*expires, o.Created); err != nil {
			return usagef("bundle create: %v", err)
		}
	}
	enc := map[string]string{"zstd": bundle.EncodingZstd, "none": bundle.EncodingRaw}[*compress]
	if enc == "" {
		return usagef("bundle create: --compress %q: want zstd or none", *compress)
	}
	keys, err := loadSigners(e, keyPaths, ext)
	if err != nil {
		return err
	}
	var gen delta.GenOptions
	if *unmapped {
		gen.LZDict, gen.LZNewDict = delta.MaxLZDictCopy, -1
	}
	srcs, cleanup, err := createSources(ctx, e, images, deltaFrom, enc, filepath.Dir(*out), gen)
	defer cleanup()
	if err != nil {
		return err
	}
	var m *bundle.Manifest
	err = writeAtomic(*out, func(w io.Writer) error {
		var err error
		m, err = bundle.CreateSigned(ctx, w, o, srcs, keys)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "wrote %s: %s %s, security version %d, %d image(s), %d signature(s)\n",
		*out, m.Compatible, m.Version, m.SecurityVersion, len(m.Images), len(keys))
	return nil
}

// createSources opens each --image CLASS=FILE as a bundle source, replaced
// by a delta from its --delta-from image when that is smaller. cleanup
// closes the files and removes temporary patches; call it also on error.
func createSources(ctx context.Context, e *Env, images, deltaFrom []string, enc, tmpDir string, gen delta.GenOptions) (srcs []bundle.Source, cleanup func(), err error) {
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	olds := map[string]string{}
	for _, spec := range deltaFrom {
		class, path, ok := strings.Cut(spec, "=")
		if !ok {
			if len(images) != 1 {
				return nil, cleanup, usagef("bundle create: --delta-from %q: with several images use CLASS=OLD.img", spec)
			}
			class, path = strings.SplitN(images[0], "=", 2)[0], spec
		}
		olds[class] = path
	}
	for _, spec := range images {
		class, path, ok := strings.Cut(spec, "=")
		if !ok || class == "" || path == "" {
			return nil, cleanup, usagef("bundle create: --image %q: want CLASS=FILE", spec)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, cleanup, err
		}
		undo = append(undo, func() { f.Close() })
		st, err := f.Stat()
		if err != nil {
			return nil, cleanup, err
		}
		src := bundle.Source{Class: class, Encoding: enc, Data: f, Size: st.Size()}
		if old, ok := olds[class]; ok {
			delete(olds, class)
			ds, dsCleanup, err := deltaSource(ctx, e, class, old, f, st.Size(), tmpDir, gen)
			undo = append(undo, dsCleanup)
			if err != nil {
				return nil, cleanup, err
			}
			if ds != nil {
				src = *ds
			}
		}
		srcs = append(srcs, src)
	}
	if len(olds) > 0 {
		return nil, cleanup, usagef("bundle create: --delta-from names a class without an --image: %v", olds)
	}
	return srcs, cleanup, nil
}

// deltaSource generates a patch from old to the new image into a temporary
// file in dir. It returns nil (ship the full image) when the patch would not
// be smaller than the full image compressed.
func deltaSource(ctx context.Context, e *Env, class, oldPath string, newImg *os.File, newSize int64, dir string, gen delta.GenOptions) (*bundle.Source, func(), error) {
	cleanup := func() {}
	old, err := os.Open(oldPath)
	if err != nil {
		return nil, cleanup, err
	}
	defer old.Close()
	ost, err := old.Stat()
	if err != nil {
		return nil, cleanup, err
	}
	patch, err := os.CreateTemp(dir, ".otab-delta-*")
	if err != nil {
		return nil, cleanup, err
	}
	cleanup = func() { patch.Close(); os.Remove(patch.Name()) }
	st, err := delta.Generate(ctx, old, ost.Size(), newImg, newSize, patch, gen)
	if errors.Is(err, delta.ErrDeltaNotSmaller) {
		fmt.Fprintf(e.Stdout, "%s: delta (%d bytes) not smaller than the full image (%d bytes compressed): shipping the full image\n", class, st.PatchSize, st.FullSize)
		return nil, cleanup, nil
	}
	if err != nil {
		return nil, cleanup, fmt.Errorf("delta for %s: %w", class, err)
	}
	oldSum, err := fileSHA256(old, ost.Size())
	if err != nil {
		return nil, cleanup, err
	}
	newSum, err := fileSHA256(newImg, newSize)
	if err != nil {
		return nil, cleanup, err
	}
	pst, err := patch.Stat()
	if err != nil {
		return nil, cleanup, err
	}
	fmt.Fprintf(e.Stdout, "%s: delta %d bytes from %s (%d bytes); %d of %d windows LZ-coded (%s)\n", class, pst.Size(), oldPath, ost.Size(), st.LZWindows, st.Windows, st.LZCoder)
	return &bundle.Source{Class: class, Encoding: bundle.EncodingDelta, Data: patch, Size: pst.Size(),
		TargetSize: newSize, TargetSHA256: newSum,
		Delta: &bundle.DeltaSource{SourceSHA256: oldSum, SourceSize: ost.Size()}}, cleanup, nil
}

func fileSHA256(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func bundleSign(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle sign", "BUNDLE", "Adds (or replaces) a signature per --key or external signer; the bundle identity does not change.\nCo-signing: engineering creates and signs, the OEM adds its signature with this command.")
	var keyPaths listFlag
	fs.Var(&keyPaths, "key", "private key file, repeatable")
	ext := addSignerFlags(fs)
	out := fs.String("o", "", "write the signed bundle here (default: replace BUNDLE atomically)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if (len(keyPaths) == 0 && !ext.given()) || fs.NArg() != 1 {
		return usagef("bundle sign: need --key (or --signer/--signer-cmd with --pub) and one BUNDLE")
	}
	in := fs.Arg(0)
	dst := *out
	if dst == "" {
		dst = in
	}
	signers, err := loadSigners(e, keyPaths, ext)
	if err != nil {
		return err
	}
	// One pass writes every new signature: each is made and verified
	// before the temporary file is renamed over dst.
	err = writeAtomic(dst, func(w io.Writer) error {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		return bundle.AddSignatures(ctx, w, f, signers...)
	})
	if err != nil {
		return fmt.Errorf("bundle sign %s: %w", in, err)
	}
	for _, s := range signers {
		p := s.Public()
		fmt.Fprintf(e.Stdout, "%s: signed with %s (%s, role %s)\n", dst, p.ID, p.Alg, p.Role)
	}
	return nil
}
