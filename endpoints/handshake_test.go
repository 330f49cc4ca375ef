package endpoints

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/recovery"
)

// writeCA writes a CA and a certificate it signed for 127.0.0.1; the files
// are CA, certificate, key.
func writeCA(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return caFile, certFile, keyFile
}

// withClientTLS makes a client whose server check is o (Endpoint filled in).
func withClientTLS(t *testing.T, o trust.ClientOptions) func(*ClientConfig) {
	return func(c *ClientConfig) {
		o.Endpoint = c.ServerEndpoint
		conf, err := trust.LoadClient(o, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = conf
	}
}

// waitMetrics waits until every wanted series has at least its value.
func waitMetrics(t *testing.T, eps []interface{ Gatherer() prometheus.Gatherer }, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := gather(t, eps...)
		missing := ""
		for k, v := range want {
			if got[k] < v {
				missing += fmt.Sprintf("%s = %v, want >= %v; ", k, got[k], v)
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			var have []string
			for k, v := range got {
				if strings.HasPrefix(k, "quictun_handshake") {
					have = append(have, fmt.Sprintf("%s=%v", k, v))
				}
			}
			t.Fatalf("%s\nhave: %v", missing, have)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Failed handshakes are counted by reason on both sides: clients that refuse
// the server's certificate (pin, unknown CA, wrong name), a client that falls
// silent mid-handshake, and a client refused by mutual TLS.
func TestHandshakeFailuresByReason(t *testing.T) {
	caFile, certFile, keyFile := writeCA(t)
	otherCA, _, _ := writeCA(t)
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.PreambleTimeout = time.Second // also the handshake's idle timeout
		id, err := trust.LoadServer(trust.ServerOptions{CertFile: certFile, KeyFile: keyFile}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = id.TLS
	}})
	defer stopServer()
	addr := srv.Addr().String()
	type gatherer = interface{ Gatherer() prometheus.Gatherer }
	eps := []gatherer{srv}
	for _, o := range []trust.ClientOptions{
		{Fingerprint: "sha256:" + strings.Repeat("00", 32)},
		{CAFile: otherCA},
		{CAFile: caFile, ServerName: "other.example"},
	} {
		cli, stop := startClient(t, addr, pairOptions{token: "127.0.0.1:1", clientMods: withClientTLS(t, o)})
		defer stop()
		eps = append(eps, cli)
	}
	// A client whose every datagram after its first is lost: the server
	// answers its Initial and then waits for the rest of the handshake.
	var sent atomic.Int32
	_, stopSilent := startClient(t, addr, pairOptions{token: "127.0.0.1:1", clientMods: func(c *ClientConfig) {
		c.Recovery = &recovery.Config{Mode: recovery.Off}
		c.WrapUDP = func(pc net.PacketConn) net.PacketConn { return &firstDatagramOnly{PacketConn: pc, sent: &sent} }
	}})
	defer stopSilent()
	// And one that connects: its session is not counted.
	good, stopGood := startClient(t, addr, pairOptions{token: "127.0.0.1:1",
		clientMods: withClientTLS(t, trust.ClientOptions{CAFile: caFile})})

	waitMetrics(t, eps, map[string]float64{
		`quictun_handshake_failures_total{endpoint="client",reason="pin mismatch"}`:                1,
		`quictun_handshake_failures_total{endpoint="client",reason="unknown CA"}`:                  1,
		`quictun_handshake_failures_total{endpoint="client",reason="certificate name mismatch"}`:   1,
		`quictun_handshake_failures_total{endpoint="server",reason="tls remote: bad certificate"}`: 3,
		`quictun_handshake_failures_total{endpoint="server",reason="handshake timeout"}`:           1,
	})
	waitUntil(t, func() bool { return len(good.sessions.live()) == 1 })
	for k, v := range gather(t, good) {
		if strings.HasPrefix(k, "quictun_handshake_failures_total") && v > 0 {
			t.Errorf("the client that connected counted %s = %v", k, v)
		}
	}
	// Nor does the server count that session when it ends.
	stopGood()
	waitUntil(t, func() bool { return len(srv.liveSessions()) == 0 })
	time.Sleep(100 * time.Millisecond) // the count would come from a goroutine of its own
	if n := gather(t, srv)[`quictun_handshake_failures_total{endpoint="server",reason="closed"}`]; n != 0 {
		t.Errorf("an accepted session that closed was counted as a failed handshake (%v)", n)
	}

	// Mutual TLS: a client without a certificate is refused by the server.
	mtls, stopMTLS := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		id, err := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir(), VerifyClient: true, CAFile: otherCA}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = id.TLS
	}})
	defer stopMTLS()
	_, stopNoCert := startClient(t, mtls.Addr().String(), pairOptions{token: "127.0.0.1:1"})
	defer stopNoCert()
	waitMetrics(t, []gatherer{mtls}, map[string]float64{
		`quictun_handshake_failures_total{endpoint="server",reason="tls local: certificate required"}`: 1,
	})
}

// firstDatagramOnly sends the first datagram and silently drops the rest.
type firstDatagramOnly struct {
	net.PacketConn
	sent *atomic.Int32
}

func (c *firstDatagramOnly) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.sent.Add(1) > 1 {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func TestHandshakeReason(t *testing.T) {
	for _, c := range []struct {
		err    error
		reason string
	}{
		{&quic.VersionNegotiationError{Ours: []quic.Version{quic.Version1}}, "version negotiation"},
		{&quic.HandshakeTimeoutError{}, "handshake timeout"},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), "timeout"},
		{&quic.TransportError{ErrorCode: 0x100 + 42, Remote: true}, "tls remote: bad certificate"},
		{&quic.TransportError{ErrorCode: 0x100 + 116}, "tls local: certificate required"},
		{fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}), "unknown CA"},
		{&quic.TransportError{ErrorCode: quic.ProtocolViolation, Remote: true}, "transport error"},
		{&quic.IdleTimeoutError{}, "handshake timeout"},
		{&quic.StatelessResetError{}, "stateless reset"},
		{&quic.ApplicationError{Remote: true}, "closed"},
		{&net.DNSError{Err: "no such host", Name: "nohost"}, "resolve"},
		{&net.OpError{Op: "write", Err: errors.New("network is unreachable")}, "network"},
		{errors.New("?"), "other"},
	} {
		if got := handshakeReason(c.err); got != c.reason {
			t.Errorf("%v: reason %q, want %q", c.err, got, c.reason)
		}
	}
}
