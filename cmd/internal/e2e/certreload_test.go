package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A certificate replaced on disk reaches new sessions on SIGHUP: a client
// pinned to the new fingerprint gets in, the live tunnel of a client pinned to
// the old one carries on, and a broken key pair is refused whole.
func TestCertificateReloadBySIGHUP(t *testing.T) {
	target := echoServer(t)
	udp := freePort(t, "udp")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	writeKeyPair(t, cert, key)
	srv := start(t, "quictun-server", "--listen-on", udp, "--cert-file", cert, "--key-file", key, "--allow", "127.0.0.0/8:*")
	oldFP := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	client := func(fp string) string {
		listen := freePort(t, "tcp")
		p := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
			"--token-source", "tcp:"+target, "--server-fingerprint", fp)
		p.waitLog(t, "session established")
		return listen
	}
	oldConn := echoes(t, client(oldFP), "before")
	defer oldConn.Close()

	os.WriteFile(key, []byte("not a key"), 0o600)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, `reload refused.*key`)

	writeKeyPair(t, cert, key)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	newFP := srv.waitLog(t, `certificates reloaded" fingerprint=(sha256:[0-9a-f]{64})`)[1]
	if newFP == oldFP {
		t.Fatal("the reload kept the old certificate")
	}
	echoes(t, client(newFP), "after").Close()

	oldConn.SetDeadline(time.Now().Add(5 * time.Second))
	oldConn.Write([]byte("still"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(oldConn, buf); err != nil || string(buf) != "still" {
		t.Fatalf("the live tunnel after the reload: %q, %v", buf, err)
	}
}

func writeKeyPair(t *testing.T, certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "quictun e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}
