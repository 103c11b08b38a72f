//go:build !otad_device

package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/crypt"
)

// Encrypted bundles on the build host: `bundle encrypt` seals a signed
// bundle for a set of device (or group) keys; `bundle recipients` lists or
// extends the unsigned recipient block of a released one without re-signing.

func bundleEncrypt(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "bundle encrypt", "BUNDLE",
		"Plain BUNDLE: seals every payload chunk (AES-256-GCM, fresh content key), wraps the key\n"+
			"for each --to key and signs the new manifest with --key/--signer (new bundle identity).\n"+
			"Encrypted BUNDLE: --identity (a recipient key you hold) unwraps the content key and the\n"+
			"recipient block is replaced by exactly the --to keys; nothing is re-signed.\n"+
			"Keep a publisher key among the recipients so 'recipients add' works later.")
	var to, keyPaths listFlag
	fs.Var(&to, "to", "recipient public key file (device or group, x25519/p256), repeatable")
	fs.Var(&keyPaths, "key", "signing key for a plain BUNDLE, repeatable")
	ext := addSignerFlags(fs)
	identity := fs.String("identity", "", "recipient private key that unwraps an encrypted BUNDLE")
	out := fs.String("o", "", "output (default: replace BUNDLE atomically)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if len(to) == 0 || fs.NArg() != 1 {
		return usagef("bundle encrypt: need --to KEY (repeatable) and one BUNDLE")
	}
	in := fs.Arg(0)
	dst := *out
	if dst == "" {
		dst = in
	}
	pubs, err := readRecipients(to)
	if err != nil {
		return err
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	front, err := bundle.Inspect(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("bundle encrypt %s: %w", in, err)
	}
	if front.Manifest.Encryption != nil {
		if *identity == "" {
			return usagef("bundle encrypt: %s is already encrypted; give --identity to re-wrap its key", in)
		}
		return rewrap(e, in, dst, *identity, pubs, true)
	}
	if len(keyPaths) == 0 && !ext.given() {
		return usagef("bundle encrypt: a plain bundle needs --key (or --signer/--signer-cmd with --pub): its manifest changes")
	}
	signers, err := loadSigners(e, keyPaths, ext)
	if err != nil {
		return err
	}
	var m *bundle.Manifest
	err = writeAtomic(dst, func(w io.Writer) error {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		m, err = bundle.Encrypt(ctx, w, f, st.Size(), signers, pubs, rand.Reader)
		return err
	})
	if err != nil {
		return fmt.Errorf("bundle encrypt %s: %w", in, err)
	}
	mb, err := bundle.MarshalManifest(m)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(mb)
	fmt.Fprintf(e.Stdout, "%s: encrypted for %d recipients, identity %x\n", dst, len(pubs), sum)
	return nil
}

func rewrap(e *Env, in, dst, identity string, pubs []*crypt.PublicKey, replace bool) error {
	id, err := readIdentity(identity)
	if err != nil {
		return err
	}
	err = writeAtomic(dst, func(w io.Writer) error {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		return bundle.Rewrap(w, f, id, pubs, replace, rand.Reader)
	})
	if err != nil {
		return fmt.Errorf("bundle recipients %s: %w", in, err)
	}
	verb := "added"
	if replace {
		verb = "set"
	}
	fmt.Fprintf(e.Stdout, "%s: %s %d recipients (manifest and signatures unchanged)\n", dst, verb, len(pubs))
	return nil
}

func bundleRecipients(ctx context.Context, e *Env, args []string) error {
	if len(args) == 0 {
		return usagef("bundle recipients: need keygen, add or list")
	}
	switch args[0] {
	case "keygen":
		return recipientsKeygen(e, args[1:])
	case "add":
		fs := newFlags(e, "bundle recipients add", "BUNDLE", "Wraps the content key of an encrypted BUNDLE for more devices or groups.\nThe signed manifest and the signatures are not touched.")
		var to listFlag
		fs.Var(&to, "to", "recipient public key file, repeatable")
		identity := fs.String("identity", "", "recipient private key you hold for this bundle (required)")
		out := fs.String("o", "", "output (default: replace BUNDLE atomically)")
		if err := parseFlags(e, fs, args[1:]); err != nil {
			return err
		}
		if len(to) == 0 || *identity == "" || fs.NArg() != 1 {
			return usagef("bundle recipients add: need --identity, --to KEY and one BUNDLE")
		}
		pubs, err := readRecipients(to)
		if err != nil {
			return err
		}
		dst := *out
		if dst == "" {
			dst = fs.Arg(0)
		}
		return rewrap(e, fs.Arg(0), dst, *identity, pubs, false)
	case "list":
		fs := newFlags(e, "bundle recipients list", "BUNDLE", "Lists the key ids the content key is wrapped for (block NOT verified; it is unsigned).")
		if err := parseFlags(e, fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return usagef("bundle recipients list: need one BUNDLE")
		}
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		_, es, err := bundle.RecipientsOf(f)
		if err != nil {
			return err
		}
		if es == nil {
			return fmt.Errorf("bundle recipients list: %s is not encrypted", fs.Arg(0))
		}
		for _, en := range es {
			fmt.Fprintf(e.Stdout, "%s %s\n", en.ID, crypt.KEMName(en.KEM))
		}
		fmt.Fprintf(e.Stdout, "%d recipients, block %d bytes\n", len(es), crypt.BlockSize(len(es)))
		return nil
	}
	return usagef("bundle recipients: unknown subcommand %q (keygen, add, list)", args[0])
}

func recipientsKeygen(e *Env, args []string) error {
	fs := newFlags(e, "bundle recipients keygen", "", "Writes PREFIX.key (mode 0600: the device's [keyring] decryption-key, or a\ngroup key shared by a hardware batch) and PREFIX.pub (for --to).")
	alg := fs.String("alg", "x25519", "x25519 or p256")
	out := fs.String("o", "", "output PREFIX (required)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("bundle recipients keygen: need -o PREFIX")
	}
	k, err := crypt.GenerateKey(rand.Reader, *alg)
	if err != nil {
		return err
	}
	priv, err := k.MarshalPrivatePEM()
	if err != nil {
		return err
	}
	pub, err := k.Public.MarshalPublicPEM()
	if err != nil {
		return err
	}
	// O_EXCL: never overwrite a key a device may already hold.
	f, err := os.OpenFile(*out+".key", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(priv); err != nil {
		f.Close()
		os.Remove(*out + ".key")
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(*out + ".key")
		return err
	}
	if err := os.WriteFile(*out+".pub", pub, 0o644); err != nil {
		os.Remove(*out + ".key")
		return err
	}
	fmt.Fprintf(e.Stdout, "%s.key, %s.pub: %s key id %s\n", *out, *out, *alg, k.Public.ID)
	return nil
}
