package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// handshake runs a real TLS handshake over loopback TCP and returns the
// first error of either side and the server's view of the connection.
func handshake(t *testing.T, server, client *tls.Config) (error, tls.ConnectionState) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		cs  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// Wait for the client's verdict on us before closing.
			_, _ = tc.Read(make([]byte, 1))
		}
		done <- result{tc.ConnectionState(), err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, client)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	herr := tc.Handshake()
	if herr == nil {
		tc.Write([]byte{0})
	}
	c.Close()
	r := <-done
	if herr == nil {
		// In TLS 1.3 the server judges the client after the client is done.
		herr = r.err
	}
	return herr, r.cs
}

func TestGeneratedKeyPairIsKeptAndStable(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadServer(ServerOptions{StateDir: dir}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadServer(ServerOptions{StateDir: dir}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint != b.Fingerprint || a.ResetKey != b.ResetKey || !a.Generated {
		t.Fatalf("identity changed across restarts: %s vs %s", a.Fingerprint, b.Fingerprint)
	}
	if fi, _ := os.Stat(filepath.Join(dir, generatedKey)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode().Perm())
	}
	os.WriteFile(filepath.Join(dir, generatedKey), []byte("garbage"), 0o600)
	if _, err := LoadServer(ServerOptions{StateDir: dir}, quiet); err == nil {
		t.Fatal("a damaged key pair was silently replaced")
	}
}

func TestTrustOnFirstUseThenPinned(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	srv, err := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "a")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	opts := ClientOptions{Endpoint: "127.0.0.1:7500", KnownHosts: kh}
	cli, err := LoadClient(opts, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, srv.TLS, cli); err != nil {
		t.Fatalf("first use: %v", err)
	}
	b, _ := os.ReadFile(kh)
	if !strings.Contains(string(b), srv.Fingerprint) {
		t.Fatalf("known_hosts %q lacks %s", b, srv.Fingerprint)
	}
	if err, _ := handshake(t, srv.TLS, cli); err != nil {
		t.Fatalf("second use: %v", err)
	}
	// Another server on the same endpoint: refused, loudly.
	other, _ := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "b")}, quiet)
	err, _ = handshake(t, other.TLS, cli)
	if err == nil || !strings.Contains(err.Error(), "SERVER KEY CHANGED") {
		t.Fatalf("changed key: %v", err)
	}
	// Pinning by fingerprint, in a loose spelling.
	loose := strings.ToUpper(strings.TrimPrefix(srv.Fingerprint, "sha256:"))
	pinned, err := LoadClient(ClientOptions{Endpoint: "127.0.0.1:7500", Fingerprint: loose}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, srv.TLS, pinned); err != nil {
		t.Fatalf("pinned: %v", err)
	}
	if err, _ := handshake(t, other.TLS, pinned); err == nil {
		t.Fatal("pin accepted another server")
	}
}

// testCA makes a CA and a certificate signed by it.
func testCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return
}

func TestCAAndMutualTLS(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir)
	srv, err := LoadServer(ServerOptions{CertFile: certFile, KeyFile: keyFile, VerifyClient: true, CAFile: caFile}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := LoadClient(ClientOptions{Endpoint: "127.0.0.1:7500", CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	err, cs := handshake(t, srv.TLS, withCert)
	if err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	if id := PeerIdentity(cs); id != "alice" {
		t.Fatalf("peer identity %q", id)
	}
	noCert, _ := LoadClient(ClientOptions{Endpoint: "127.0.0.1:7500", CAFile: caFile}, quiet)
	if err, _ := handshake(t, srv.TLS, noCert); err == nil {
		t.Fatal("server accepted a client without a certificate")
	}
	// The generated self-signed server does not pass CA verification.
	gen, _ := LoadServer(ServerOptions{StateDir: dir}, quiet)
	if err, _ := handshake(t, gen.TLS, noCert); err == nil {
		t.Fatal("CA mode accepted a self-signed server")
	}
}

func TestOptionErrors(t *testing.T) {
	for name, o := range map[string]ClientOptions{
		"insecure and pin": {Endpoint: "h:1", InsecureSkipVerify: true, Fingerprint: "sha256:00"},
		"bad pin":          {Endpoint: "h:1", Fingerprint: "sha256:zz"},
		"no verification":  {Endpoint: "h:1"},
		"half a pair":      {Endpoint: "h:1", KnownHosts: "x", CertFile: "c"},
		"bad endpoint":     {Endpoint: "nohost", KnownHosts: "x"},
	} {
		if _, err := LoadClient(o, quiet); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := LoadServer(ServerOptions{VerifyClient: true, StateDir: t.TempDir()}, quiet); err == nil {
		t.Error("--verify-remote-endpoint without a CA accepted")
	}
}
