package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/otadev/otad/internal/bundle"
)

// bundleSubs are the build-host subcommands of "otad bundle".
var bundleSubs = []struct {
	name, summary string
	run           func(ctx context.Context, e *Env, args []string) error
}{
	{"keygen", "make a signing key pair (PREFIX.key, PREFIX.pub)", bundleKeygen},
	{"create", "build and sign a bundle from slot images", bundleCreate},
	{"sign", "add a signature to an existing bundle (co-signing)", bundleSign},
	{"pubkey", "write a keyring .pub file for a key in a token or KMS", bundlePubkey},
	{"digest", "print what a signature over a bundle covers (air-gapped signing)", bundleDigest},
	{"attach-signature", "add a signature made elsewhere, checked before writing", bundleAttachSignature},
	{"verify", "verify signatures, metadata and every payload byte", bundleVerify},
	{"info", "print a bundle's manifest (signatures NOT checked)", bundleInfo},
	{"encrypt", "encrypt a bundle for device/group keys, or re-wrap an encrypted one", bundleEncrypt},
	{"recipients", "keygen, add or list the recipients of an encrypted bundle", bundleRecipients},
}

func cmdBundle(ctx context.Context, e *Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		w := e.Stdout
		if len(args) == 0 {
			w = e.Stderr
		}
		fmt.Fprintf(w, "usage: %s bundle <subcommand> [flags] [args]\n\nsubcommands:\n", e.Prog)
		for _, s := range bundleSubs {
			fmt.Fprintf(w, "  %-16s %s\n", s.name, s.summary)
		}
		if len(args) == 0 {
			return usagef("%s bundle: no subcommand given", e.Prog)
		}
		return errHelpShown
	}
	for _, s := range bundleSubs {
		if s.name == args[0] {
			return s.run(ctx, e, args[1:])
		}
	}
	return usagef("%s bundle: unknown subcommand %q (keygen, create, sign, pubkey, digest, attach-signature, verify, info)", e.Prog, args[0])
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// parseSize accepts bytes with an optional K, M or G (binary) suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with optional K, M or G", s)
	}
	return n * mult, nil
}

// countingWriter counts verified bytes for the summary line.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func bundleVerify(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle verify", "BUNDLE", "Verifies like a device would, reading every payload byte through the\nverifying reader. BUNDLE may be - for stdin.")
	keyring := fs.String("keyring", "", "directory of *.pub keys and optional policy.json (required)")
	compatible := fs.String("compatible", "", "device compatible string (default: accept any)")
	floor := fs.Uint64("floor", 0, "device security version floor")
	fullHash := fs.Bool("full-hash", false, "also hash uncompressed images end to end (second SHA-256 pass)")
	decKey := fs.String("decryption-key", "", "recipient private key for an encrypted bundle (bundle_crypt.go)")
	var slots listFlag
	fs.Var(&slots, "slot-size", "CLASS=SIZE of the device's slot, repeatable (refuse larger images)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *keyring == "" || fs.NArg() != 1 {
		return usagef("bundle verify: need --keyring and one BUNDLE")
	}
	kr, err := bundle.LoadKeyring(*keyring)
	if err != nil {
		return err
	}
	if *decKey != "" {
		if kr.Decryption, err = readIdentity(*decKey); err != nil {
			return err
		}
	}
	o := bundle.Options{Keyring: kr, Compatible: *compatible, AnyCompatible: *compatible == "",
		SecurityFloor: *floor, HashRawImages: *fullHash}
	for _, s := range slots {
		class, size, ok := strings.Cut(s, "=")
		n, err := parseSize(size)
		if !ok || err != nil {
			return usagef("bundle verify: --slot-size %q: want CLASS=SIZE", s)
		}
		if o.SlotSizes == nil {
			o.SlotSizes = map[string]int64{}
		}
		o.SlotSizes[class] = n
	}
	var src io.Reader = e.Stdin
	if p := fs.Arg(0); p != "-" {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
	}
	start := time.Now()
	r, err := bundle.NewReader(src, o)
	if err != nil {
		return err
	}
	defer r.Close()
	var total int64
	for {
		img, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		cw := &countingWriter{}
		if _, err := io.Copy(cw, r); err != nil {
			return err
		}
		total += cw.n
		fmt.Fprintf(e.Stdout, "image %-8s %s %12d bytes, %d chunks OK\n", img.Class, img.Encoding, cw.n, img.Chunks)
	}
	el := time.Since(start)
	m := r.Manifest()
	fmt.Fprintf(e.Stdout, "OK %s %s security_version %d identity %s signed by %s (%.1f MB/s)\n",
		m.Compatible, m.Version, m.SecurityVersion, r.Identity(), strings.Join(r.Signers(), ","),
		float64(total)/1e6/el.Seconds())
	return nil
}

func bundleInfo(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle info", "BUNDLE", "Prints the manifest and who signed it. Signatures are NOT verified:\nuse 'bundle verify' for that.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("bundle info: need one BUNDLE")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	front, err := bundle.Inspect(f)
	if err != nil {
		return err
	}
	type sigInfo struct {
		KeyID     string `json:"key_id"`
		Algorithm string `json:"algorithm"`
		Bits      int    `json:"bits,omitempty"`     // RSA modulus size
		KeyHash   string `json:"key_hash,omitempty"` // RSA: the key the entry names, SHA256:hex of its PKIX DER
	}
	var sigs []sigInfo
	for _, s := range front.Signatures {
		si := sigInfo{KeyID: s.KeyID, Algorithm: s.Algorithm}
		if len(s.KeyHash) > 0 {
			si.Bits, si.KeyHash = len(s.Sig)*8, fmt.Sprintf("SHA256:%x", s.KeyHash)
		}
		sigs = append(sigs, si)
	}
	sort.Slice(sigs, func(i, j int) bool { return sigs[i].KeyID < sigs[j].KeyID })
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Identity   string           `json:"identity"`
			Verified   bool             `json:"verified"`
			Manifest   *bundle.Manifest `json:"manifest"`
			Signatures []sigInfo        `json:"signatures"`
		}{front.Identity, false, front.Manifest, sigs})
	}
	m := front.Manifest
	w := e.Stdout
	fmt.Fprintf(w, "identity:         %s\n", front.Identity)
	fmt.Fprintf(w, "compatible:       %s\nversion:          %s\nsecurity_version: %d\n", m.Compatible, m.Version, m.SecurityVersion)
	fmt.Fprintf(w, "created:          %s\n", m.Created.Format(time.RFC3339))
	if !m.Expires.IsZero() {
		fmt.Fprintf(w, "expires:          %s\n", m.Expires.Format(time.RFC3339))
	}
	for _, img := range m.Images {
		fmt.Fprintf(w, "image %s: %s, %d bytes (payload %d), %d chunks of %d, sha256 %s\n",
			img.Class, img.Encoding, img.Size, img.PayloadSize, img.Chunks, img.ChunkSize, img.SHA256)
		if img.Delta != nil {
			fmt.Fprintf(w, "  delta from %s (%d bytes)\n", img.Delta.SourceSHA256, img.Delta.SourceSize)
		}
	}
	if m.Encryption != nil { // payloads sealed; 'bundle recipients list' names the keys
		fmt.Fprintf(w, "encryption:       %s, key commitment %s\n", m.Encryption.Cipher, m.Encryption.KeyCommitment)
	}
	for _, s := range sigs {
		if s.Bits > 0 {
			fmt.Fprintf(w, "signature:        %s (%s, RSA-%d, key %s) — not verified\n", s.KeyID, s.Algorithm, s.Bits, s.KeyHash)
			continue
		}
		fmt.Fprintf(w, "signature:        %s (%s) — not verified\n", s.KeyID, s.Algorithm)
	}
	return nil
}
