package endpoints

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quictun/quictun/netem"
)

// transferThrough sends size random bytes through the client endpoint to a
// checksumApp, runs during meanwhile, and checks the checksum that comes back.
func transferThrough(t *testing.T, client net.Addr, size int, during func()) {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{9}).Read(data)
	c := dialApp(t, client)
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	done := make(chan error, 1)
	go func() {
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := c.Write(data[off:min(off+64<<10, len(data))]); err != nil {
				done <- err
				return
			}
		}
		done <- closeWrite(c)
	}()
	during()
	if err := <-done; err != nil {
		t.Fatalf("send: %v", err)
	}
	var reply [32]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		t.Fatalf("no checksum back: %v", err)
	}
	if reply != sha256.Sum256(data) {
		t.Fatal("the server application received different bytes")
	}
}

func checksumApp(t *testing.T) *app {
	return startApp(t, loopbackTCP(), func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		c.Write(h.Sum(nil))
	})
}

// All packets are dropped both ways for 5 s in the middle of a transfer: the
// session survives and every byte arrives.
func TestFiveSecondBlackout(t *testing.T) {
	if testing.Short() {
		t.Skip("5 s blackout: not in -short")
	}
	app := checksumApp(t)
	defer app.close()
	var links []*netem.PacketConn
	var mu sync.Mutex
	wrap := func(pc net.PacketConn) net.PacketConn {
		l := netem.NewPacketConn(pc, netem.Model{Delay: 5 * time.Millisecond}, int64(len(links)+1))
		mu.Lock()
		links = append(links, l)
		mu.Unlock()
		return l
	}
	p := startPair(t, pairOptions{token: app.addr.String(),
		serverMods: func(c *ServerConfig) { c.WrapUDP = wrap },
		clientMods: func(c *ClientConfig) { c.WrapUDP = wrap }})
	defer p.stop()
	transferThrough(t, p.client.Addr(), 32<<20, func() {
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for _, l := range links {
			l.SetModel(netem.Model{Delay: 5 * time.Millisecond, Loss: 1})
		}
		time.Sleep(5 * time.Second)
		for _, l := range links {
			l.SetModel(netem.Model{Delay: 5 * time.Millisecond})
		}
	})
}

// rebindingConn is a client's UDP socket behind a NAT that changes its mapping:
// rebind moves it to a new local port mid-session.
type rebindingConn struct {
	mu  sync.Mutex
	cur *net.UDPConn
}

func (r *rebindingConn) conn() *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *rebindingConn) rebind(t *testing.T) {
	fresh, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	old := r.cur
	r.cur = fresh
	r.mu.Unlock()
	old.Close()
}

func (r *rebindingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c := r.conn()
		n, a, err := c.ReadFrom(b)
		if err != nil && c != r.conn() {
			continue // the socket was swapped under the read
		}
		return n, a, err
	}
}
func (r *rebindingConn) WriteTo(b []byte, a net.Addr) (int, error) { return r.conn().WriteTo(b, a) }
func (r *rebindingConn) Close() error                              { return r.conn().Close() }
func (r *rebindingConn) LocalAddr() net.Addr                       { return r.conn().LocalAddr() }
func (r *rebindingConn) SetDeadline(t time.Time) error             { return r.conn().SetDeadline(t) }
func (r *rebindingConn) SetReadDeadline(t time.Time) error         { return r.conn().SetReadDeadline(t) }
func (r *rebindingConn) SetWriteDeadline(t time.Time) error        { return r.conn().SetWriteDeadline(t) }

// A client whose UDP source port changes (NAT rebinding) in the middle of a
// transfer keeps its session and its live tunnel.
func TestNATRebindingKeepsTheSession(t *testing.T) {
	app := checksumApp(t)
	defer app.close()
	var nat *rebindingConn
	p := startPair(t, pairOptions{token: app.addr.String(),
		// A 50 Mbit/s link, so that the transfer is still running when the port changes.
		serverMods: func(c *ServerConfig) {
			c.WrapUDP = func(pc net.PacketConn) net.PacketConn {
				return netem.NewPacketConn(pc, netem.Model{RateBps: 50e6, Delay: 2 * time.Millisecond}, 1)
			}
		},
		clientMods: func(c *ClientConfig) {
			c.WrapUDP = func(pc net.PacketConn) net.PacketConn {
				// A socket of our own on 127.0.0.1, so the server sees the
				// same address family before and after.
				pc.Close()
				first, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				nat = &rebindingConn{cur: first}
				return netem.NewPacketConn(nat, netem.Model{RateBps: 50e6, Delay: 2 * time.Millisecond}, 2)
			}
		}})
	defer p.stop()
	roundTrip := func() {
		c := dialApp(t, p.client.Addr())
		defer c.Close()
		c.Write([]byte("x"))
		closeWrite(c)
		io.ReadFull(c, make([]byte, 32))
	}
	roundTrip()
	session := p.client.sessions.live()[0]
	before := nat.LocalAddr().String()
	start := time.Now()
	transferThrough(t, p.client.Addr(), 16<<20, func() {
		time.Sleep(500 * time.Millisecond)
		nat.rebind(t)
	})
	if elapsed := time.Since(start); elapsed < 600*time.Millisecond {
		t.Fatalf("transfer took %v: the port changed after it, not during it", elapsed)
	}
	if nat.LocalAddr().String() == before {
		t.Fatal("the port did not change")
	}
	roundTrip()
	if live := p.client.sessions.live(); len(live) != 1 || live[0] != session {
		t.Fatal("the client had to dial a new session")
	}
}
