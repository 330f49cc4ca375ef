package trust

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
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

// Every bad option is an *OptionError that names the option at fault, so that
// the command can say which flag or config line it was.
func TestOptionErrorsNameTheOption(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not PEM"), 0o600)
	badKH := filepath.Join(dir, "bad_known_hosts")
	os.WriteFile(badKH, []byte("# ok\nh:1 sha256:zz\n"), 0o600)
	for name, c := range map[string]struct {
		o      ClientOptions
		option string
		text   string
	}{
		"insecure and pin":       {ClientOptions{Endpoint: "h:1", InsecureSkipVerify: true, Fingerprint: "sha256:00"}, "insecure-skip-verify", "contradicts"},
		"bad pin":                {ClientOptions{Endpoint: "h:1", Fingerprint: "sha256:zz"}, "server-fingerprint", "64 hex digits"},
		"no verification":        {ClientOptions{Endpoint: "h:1"}, "known-hosts", "no way to verify"},
		"cert without key":       {ClientOptions{Endpoint: "h:1", KnownHosts: "x", CertFile: certFile}, "cert-file", "needs --key-file"},
		"key without cert":       {ClientOptions{Endpoint: "h:1", KnownHosts: "x", KeyFile: keyFile}, "key-file", "needs --cert-file"},
		"missing cert":           {ClientOptions{Endpoint: "h:1", KnownHosts: "x", CertFile: junk + "2", KeyFile: keyFile}, "cert-file", "no such file"},
		"missing key":            {ClientOptions{Endpoint: "h:1", KnownHosts: "x", CertFile: certFile, KeyFile: junk + "2"}, "key-file", "no such file"},
		"junk cert":              {ClientOptions{Endpoint: "h:1", KnownHosts: "x", CertFile: junk, KeyFile: keyFile}, "cert-file", "no PEM certificate"},
		"key of another cert":    {ClientOptions{Endpoint: "h:1", KnownHosts: "x", CertFile: caFile, KeyFile: keyFile}, "key-file", "is not the private key of"},
		"junk CA":                {ClientOptions{Endpoint: "h:1", CAFile: junk}, "ca-file", "no PEM certificate"},
		"damaged known hosts":    {ClientOptions{Endpoint: "h:1", KnownHosts: badKH}, "known-hosts", "line 2"},
		"bad endpoint":           {ClientOptions{Endpoint: "nohost", KnownHosts: "x"}, "server-endpoint", "nohost"},
		"strict, trust on first": {ClientOptions{Endpoint: "h:1", KnownHosts: "x", RequireVerified: true}, "verify-remote-endpoint", "needs --ca-file or --server-fingerprint"},
		"strict and insecure":    {ClientOptions{Endpoint: "h:1", InsecureSkipVerify: true, RequireVerified: true}, "verify-remote-endpoint", "contradicts --insecure-skip-verify"},
	} {
		_, err := LoadClient(c.o, quiet)
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Option != c.option || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: got %v, want an error of --%s with %q", name, err, c.option, c.text)
		}
	}
	for name, c := range map[string]struct {
		o      ServerOptions
		option string
		text   string
	}{
		"verify without CA": {ServerOptions{VerifyClient: true, StateDir: t.TempDir()}, "verify-remote-endpoint", "needs --ca-file"},
		"junk CA":           {ServerOptions{VerifyClient: true, CAFile: junk, StateDir: t.TempDir()}, "ca-file", "no PEM certificate"},
		"junk cert":         {ServerOptions{CertFile: junk, KeyFile: keyFile}, "cert-file", "no PEM certificate"},
		"wrong key":         {ServerOptions{CertFile: caFile, KeyFile: keyFile}, "key-file", "is not the private key of"},
		"key without cert":  {ServerOptions{KeyFile: keyFile}, "key-file", "needs --cert-file"},
		"no state dir":      {ServerOptions{}, "state-dir", "nowhere to keep"},
		"state dir a file":  {ServerOptions{StateDir: junk}, "state-dir", "junk"},
	} {
		_, err := LoadServer(c.o, quiet)
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Option != c.option || !strings.Contains(err.Error(), c.text) {
			t.Errorf("server %s: got %v, want an error of --%s with %q", name, err, c.option, c.text)
		}
	}
}

// --verify-remote-endpoint on the client accepts a server verified by a CA or
// a pinned fingerprint, and still refuses the wrong one.
func TestClientRequireVerified(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir)
	byCA, err := LoadServer(ServerOptions{CertFile: certFile, KeyFile: keyFile}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "other")}, quiet)
	ca, err := LoadClient(ClientOptions{Endpoint: "127.0.0.1:7500", CAFile: caFile, RequireVerified: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, byCA.TLS, ca); err != nil {
		t.Fatalf("CA-verified server refused: %v", err)
	}
	if err, _ := handshake(t, other.TLS, ca); err == nil {
		t.Fatal("a server outside the CA was accepted")
	}
	pinned, err := LoadClient(ClientOptions{Endpoint: "127.0.0.1:7500", Fingerprint: other.Fingerprint, RequireVerified: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, other.TLS, pinned); err != nil {
		t.Fatalf("pinned server refused: %v", err)
	}
	if err, _ := handshake(t, byCA.TLS, pinned); err == nil {
		t.Fatal("a server with another key was accepted")
	}
}

// ParseFingerprint takes any string without panicking; what it accepts is in
// canonical form, which it accepts again unchanged.
func FuzzParseFingerprint(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add(strings.Repeat("AB:", 31) + "AB")
	f.Add("sha256:zz")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		if len(fp) != len(fingerprintPrefix)+64 || !strings.HasPrefix(fp, fingerprintPrefix) {
			t.Fatalf("%q parsed to %q", s, fp)
		}
		if again, err := ParseFingerprint(fp); err != nil || again != fp {
			t.Fatalf("canonical %q parsed to %q, %v", fp, again, err)
		}
	})
}

// The known-hosts parser takes any bytes without panicking; an entry it finds
// is a canonical fingerprint on a real line.
func FuzzKnownHosts(f *testing.F) {
	fp := "sha256:" + strings.Repeat("0f", 32)
	f.Add([]byte("# comment\nh:1 "+fp+"\n"), "h:1")
	f.Add([]byte("h:1 "+fp+"\nh:1 sha256:00\n"), "h:1")
	f.Add([]byte("h:1\n"), "h:1")
	f.Add([]byte("\n\n[::1]:7500 "+fp), "[::1]:7500")
	f.Fuzz(func(t *testing.T, data []byte, endpoint string) {
		got, line, err := parseKnownHosts(bytes.NewReader(data), "fuzz", endpoint)
		if err != nil || got == "" {
			if got != "" || line != 0 {
				t.Fatalf("nothing found but %q at line %d", got, line)
			}
			return
		}
		if again, err := ParseFingerprint(got); err != nil || again != got {
			t.Fatalf("found a non-canonical fingerprint %q", got)
		}
		if line < 1 || line > bytes.Count(data, []byte("\n"))+1 {
			t.Fatalf("line %d of %d", line, bytes.Count(data, []byte("\n"))+1)
		}
	})
}
