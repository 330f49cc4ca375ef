package endpoints

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/internal/logtap"
)

// testCA is a certificate authority for tests, kept in a directory.
type testCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: t.TempDir(), cert: cert, key: key}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return ca
}

// issue signs a key pair for name (a server for 127.0.0.1, or a client) and
// returns its files.
func (ca *testCA) issue(t *testing.T, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

// Mutual TLS and CA verification through real QUIC sessions: the server
// requires a client certificate of its CA (--verify-remote-endpoint --ca-file),
// the clients verify the server by the same CA (and insist on it). A client
// with its certificate gets a tunnel under its name; one without, or with a
// certificate of another CA, never reaches the server application.
// serverIdentity is a server's TLS identity signed by ca, that requires
// client certificates signed by ca.
func (ca *testCA) serverIdentity(t *testing.T) *trust.Server {
	t.Helper()
	serverCert, serverKey := ca.issue(t, "server", true)
	id, err := trust.LoadServer(trust.ServerOptions{CertFile: serverCert, KeyFile: serverKey,
		VerifyClient: true, CAFile: ca.file}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMutualTLSOverQUIC(t *testing.T) {
	var reached atomic.Int32
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) { reached.Add(1); echo(c) })
	defer srvApp.close()

	ca := newTestCA(t, "quictun test CA")
	id := ca.serverIdentity(t)
	var serverLog logtap.Tap
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.TLS = id.TLS
		c.Logger = serverLog.Logger(slog.LevelDebug, "side", "server")
	}})
	defer stopServer()
	endpoint := srv.Addr().String()

	startWith := func(certFile, keyFile string, log *logtap.Tap) (*Client, func()) {
		tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: endpoint, CAFile: ca.file,
			CertFile: certFile, KeyFile: keyFile, RequireVerified: true}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return startClient(t, endpoint, pairOptions{token: srvApp.addr.String(), clientMods: func(c *ClientConfig) {
			c.TLS = tlsConf
			c.SessionWait = time.Second
			c.Logger = log.Logger(slog.LevelDebug, "side", "client")
		}})
	}

	// Refused: no certificate, and one of an impostor CA (the same name, so
	// that the client offers it, another key).
	impostor := newTestCA(t, "quictun test CA")
	malloryCert, malloryKey := impostor.issue(t, "mallory", false)
	for name, c := range map[string]struct{ cert, key, why string }{
		"no certificate":            {"", "", "certificate required"},
		"an impostor's certificate": {malloryCert, malloryKey, "unknown certificate authority"},
	} {
		var log logtap.Tap
		cli, stop := startWith(c.cert, c.key, &log)
		app := dialApp(t, cli.Addr())
		app.SetDeadline(time.Now().Add(10 * time.Second))
		app.Write([]byte("let me in"))
		if n, err := io.ReadFull(app, make([]byte, 9)); err == nil {
			t.Errorf("%s: got a tunnel (%d bytes back)", name, n)
		}
		app.Close()
		stop()
		// The server's TLS alert, as the client logs it.
		if !strings.Contains(log.String(), "CRYPTO_ERROR") || !strings.Contains(log.String(), c.why) {
			t.Errorf("%s: the client did not log %q:\n%s", name, c.why, log.String())
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("clients without a valid certificate reached the server application %d times", n)
	}
	if n := srv.Registry().Len(); n != 0 {
		t.Fatalf("%d tunnels on the server from refused clients", n)
	}

	// Admitted: a certificate of the server's CA, under its name.
	aliceCert, aliceKey := ca.issue(t, "alice", false)
	var log logtap.Tap
	cli, stop := startWith(aliceCert, aliceKey, &log)
	defer stop()
	c := dialApp(t, cli.Addr())
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("let me in"))
	buf := make([]byte, 9)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "let me in" {
		t.Fatalf("alice: %q, %v\nclient log:\n%s", buf, err, log.String())
	}
	snaps := srv.Registry().Snapshots()
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0].Info.Session, "alice@127.0.0.1:") {
		t.Fatalf("server tunnels: %+v", snaps)
	}
	if len(serverLog.Lines(`msg="session opened"`, `session=alice@127.0.0.1:`)) == 0 {
		t.Errorf("server log:\n%s", serverLog.String())
	}
}

// Client certificates map to identities by name: alice's certificate is the
// identity ops, carol's is lab whose rules deny the application, and dave's,
// which no line claims, is its own identity with the server's rules.
func TestCertificatesMapToIdentities(t *testing.T) {
	srvApp := startApp(t, loopbackTCP(), echo)
	defer srvApp.close()
	ca := newTestCA(t, "quictun test CA")
	id := ca.serverIdentity(t)
	ids, _, err := identity.Parse(strings.NewReader("ops - cert=Alice\nlab - cert=carol deny="+srvApp.addr.Addr+"\n"), "ids", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.TLS, c.Identities = id.TLS, ids }})
	defer stopServer()
	for _, tc := range []struct{ cert, identity string }{{"alice", "ops"}, {"carol", ""}, {"dave", "cert:dave"}} {
		certFile, keyFile := ca.issue(t, tc.cert, false)
		tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: srv.Addr().String(), CAFile: ca.file,
			CertFile: certFile, KeyFile: keyFile, RequireVerified: true}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: srvApp.addr.String(),
			clientMods: func(c *ClientConfig) { c.TLS = tlsConf }})
		if tc.identity == "" {
			assertClosedPromptly(t, cli.Addr(), true)
			stop()
			continue
		}
		c := dialApp(t, cli.Addr())
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hi"))
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			t.Fatalf("%s: %v", tc.cert, err)
		}
		snaps := srv.Registry().Snapshots()
		if len(snaps) != 1 || snaps[0].Info.Identity != tc.identity {
			t.Fatalf("%s: server tunnels %+v, want identity %q", tc.cert, snaps, tc.identity)
		}
		c.Close()
		stop()
		waitUntil(t, func() bool { return srv.Registry().Len() == 0 })
	}
}
