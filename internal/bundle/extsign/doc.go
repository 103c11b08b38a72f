// Package extsign signs bundles with keys that never leave where they are
// kept: a PKCS#11 token (an HSM, a smart card, SoftHSM) through OpenSC's
// pkcs11-tool, or any command (a cloud KMS command line) that reads the
// bytes to sign on stdin and prints the signature. The build stays
// CGO_ENABLED=0: nothing here loads a PKCS#11 module into this process.
//
// Invariants: no private key byte passes through this package; every
// signature a signer returns has been checked against the keyring public
// key the caller named before it is returned (bundle.SignManifest checks it
// again); the PIN reaches pkcs11-tool through its environment, never its
// argument list, and no error text carries the PIN or the URI's query.
// Nothing is written to disk except a temporary file holding the bytes to
// sign and the signature, removed before returning. Host tooling only: the
// device build does not link it.
package extsign
