package recovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/netem"
)

// testALPN is the ALPN of the test connections.
const testALPN = "quictun-recovery-test"

var (
	tlsOnce sync.Once
	tlsCert tls.Certificate
)

func serverTLS(tb testing.TB) *tls.Config {
	tlsOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		tlsCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	return &tls.Config{Certificates: []tls.Certificate{tlsCert}, NextProtos: []string{testALPN}}
}

func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}} //nolint:gosec // test peer with a throwaway certificate
}

// endpoint is one side of a test link: a loopback UDP socket, optionally the
// netem impairment of its egress, optionally a recovery Conn, and a quic-go
// Transport on top.
type endpoint struct {
	udp       *net.UDPConn
	emu       *netem.PacketConn
	rec       *Conn
	transport *quic.Transport
}

// side says how to build one endpoint.
type side struct {
	model    *netem.Model // egress impairment; nil: none
	recovery *Config      // nil: quic-go directly on the (emulated) socket
	seed     int64
}

func newEndpoint(tb testing.TB, s side) *endpoint {
	tb.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	e := &endpoint{udp: udp}
	var pc net.PacketConn = udp
	if s.model != nil {
		e.emu = netem.NewPacketConn(udp, *s.model, s.seed)
		pc = e.emu
	}
	if s.recovery != nil {
		e.rec, err = NewConn(pc, *s.recovery)
		if err != nil {
			tb.Fatal(err)
		}
		pc = e.rec
	}
	e.transport = &quic.Transport{Conn: pc}
	return e
}

func (e *endpoint) close() {
	e.transport.Close()
	switch {
	case e.rec != nil:
		e.rec.Close()
	case e.emu != nil:
		e.emu.Close()
	default:
		e.udp.Close()
	}
}

func quicConfig() *quic.Config {
	cfg := &quic.Config{MaxIdleTimeout: 30 * time.Second}
	TuneQUICConfig(cfg)
	return cfg
}

// pair is a connected client and server.
type pair struct {
	client, server         *endpoint
	clientConn, serverConn *quic.Conn
	listener               *quic.Listener
}

func dialPair(tb testing.TB, ctx context.Context, cs, ss side) *pair {
	tb.Helper()
	p := &pair{client: newEndpoint(tb, cs), server: newEndpoint(tb, ss)}
	ln, err := p.server.transport.Listen(serverTLS(tb), quicConfig())
	if err != nil {
		p.close()
		tb.Fatal(err)
	}
	p.listener = ln
	accepted := make(chan *quic.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
	}()
	cc, err := p.client.transport.Dial(ctx, p.server.udp.LocalAddr(), clientTLS(), quicConfig())
	if err != nil {
		p.close()
		<-acceptErr
		tb.Fatalf("dial: %v", err)
	}
	p.clientConn = cc
	select {
	case p.serverConn = <-accepted:
	case err := <-acceptErr:
		p.close()
		tb.Fatalf("accept: %v", err)
	}
	return p
}

func (p *pair) close() {
	if p.clientConn != nil {
		p.clientConn.CloseWithError(0, "")
	}
	if p.serverConn != nil {
		p.serverConn.CloseWithError(0, "")
	}
	if p.listener != nil {
		p.listener.Close()
	}
	p.client.close()
	p.server.close()
}

// receiveAll accepts one stream on the server and reads it to EOF, reporting the
// byte count and a running hash through sink. It returns when the stream ends.
func receiveAll(ctx context.Context, conn *quic.Conn, sink io.Writer) (int64, error) {
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var total int64
	for {
		n, err := st.Read(buf)
		total += int64(n)
		if sink != nil {
			sink.Write(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
