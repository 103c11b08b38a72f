package fetch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is a throwaway CA with one server and one client certificate,
// written as PEM files the way a gateway would have them on disk.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	server                    tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey := genKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "otad test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage, cn string) ([]byte, *ecdsa.PrivateKey) {
		key := genKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	srvDER, srvKey := issue(2, x509.ExtKeyUsageServerAuth, "127.0.0.1")
	cliDER, cliKey := issue(3, x509.ExtKeyUsageClientAuth, "gateway-0001")
	p := &testPKI{
		caFile:   writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER),
		certFile: writePEM(t, dir, "client.pem", "CERTIFICATE", cliDER),
		keyFile:  writePEM(t, dir, "client.key", "PRIVATE KEY", marshalKey(t, cliKey)),
		pool:     x509.NewCertPool(),
		server:   tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey},
	}
	p.pool.AddCert(ca)
	return p
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshalKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *testPKI) serve(t *testing.T, h http.Handler, mutual bool) *httptest.Server {
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}}
	if mutual {
		ts.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		ts.TLS.ClientCAs = p.pool
	}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected here
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// serveRequest asks for a client certificate without requiring one, so a
// test sees whether one was presented.
func (p *testPKI) serveRequest(t *testing.T, h http.Handler) *httptest.Server {
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: p.pool}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

func TestTLSWithConfiguredCA(t *testing.T) {
	pki := newTestPKI(t)
	want := payload(200_000, 30)
	var dropped atomic.Bool
	ts := pki.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !dropped.Swap(true) {
			w = &dropWriter{ResponseWriter: w, left: 70_000}
		}
		serve(want, `"tls"`)(w, r)
	}), false)
	s := &sleeper{}
	opts := fastOpts(s)
	opts.CAFile = pki.caFile
	got := fetchAll(t, ts.URL, opts)
	mustEqual(t, got, want)
	if len(s.got()) != 1 {
		t.Fatalf("%d retries, want 1 (the resume after the drop)", len(s.got()))
	}

	// Without the CA the system roots do not know this server; that is
	// permanent, so no retries.
	s2 := &sleeper{}
	if _, err := Open(context.Background(), ts.URL, fastOpts(s2)); err == nil || len(s2.got()) != 0 {
		t.Fatalf("untrusted server: err = %v after %d retries; want an error at once", err, len(s2.got()))
	}
}

func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	want := payload(50_000, 31)
	ts := pki.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "gateway-0001" {
			http.Error(w, "who are you", http.StatusForbidden)
			return
		}
		serve(want, `"m"`)(w, r)
	}), true)
	opts := fastOpts(&sleeper{})
	opts.CAFile, opts.CertFile, opts.KeyFile = pki.caFile, pki.certFile, pki.keyFile
	got := fetchAll(t, ts.URL, opts)
	mustEqual(t, got, want)

	s := &sleeper{}
	noCert := fastOpts(s)
	noCert.CAFile = pki.caFile
	if _, err := Open(context.Background(), ts.URL, noCert); err == nil || len(s.got()) != 0 {
		t.Fatalf("no client certificate: err = %v after %d retries; want an error at once", err, len(s.got()))
	}
}

func TestTLSOptionErrors(t *testing.T) {
	pki := newTestPKI(t)
	notPEM := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for name, o := range map[string]Options{
		"missing CA file":  {CAFile: filepath.Join(t.TempDir(), "none.pem")},
		"CA file not PEM":  {CAFile: notPEM},
		"cert without key": {CertFile: pki.certFile},
		"key without cert": {KeyFile: pki.keyFile},
		"key mismatched":   {CertFile: pki.certFile, KeyFile: pki.caFile},
	} {
		if _, err := Open(context.Background(), "https://127.0.0.1:1/b", o); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}
