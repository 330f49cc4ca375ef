package endpoints

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/endpoints/address"
)

// greeter is a server application that names itself, then echoes.
func greeter(name string) func(net.Conn) {
	return func(c net.Conn) {
		c.Write([]byte(name + "\n"))
		io.Copy(c, c)
	}
}

// hello dials a forward and reads the greeting of the application behind it.
func hello(t *testing.T, a net.Addr) string {
	t.Helper()
	c := dialApp(t, a)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 0, 32)
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("read greeting through %s: %v (got %q)", a, err, line)
		}
		if b[0] == '\n' {
			return string(line)
		}
		line = append(line, b[0])
	}
}

func spec(name string, listen address.Address, target string) ForwardSpec {
	return ForwardSpec{Name: name, ListenOn: listen.String(), TokenSource: target}
}

// Three forwards (the ClientConfig shortcut, a TCP one and a UNIX-socket one)
// reach three applications over one session; the tunnels, the API listing and
// the metrics name their forward.
func TestManyForwardsOneSession(t *testing.T) {
	a := startApp(t, loopbackTCP(), greeter("a"))
	defer a.close()
	b := startApp(t, loopbackTCP(), greeter("b"))
	defer b.close()
	c := startApp(t, loopbackTCP(), greeter("c"))
	defer c.close()
	sock := address.Address{Network: address.Unix, Addr: filepath.Join(t.TempDir(), "fwd.sock")}
	p := startPair(t, pairOptions{token: a.addr.String(), clientMods: func(cfg *ClientConfig) {
		cfg.Forwards = []ForwardSpec{spec("b", loopbackTCP(), b.addr.String()), spec("", sock, c.addr.String())}
	}})
	defer p.stop()

	for name, want := range map[string]string{DefaultForward: "a", "b": "b", sock.String(): "c"} {
		if got := hello(t, p.client.ForwardAddr(name)); got != want {
			t.Errorf("forward %s reached %q, want %q", name, got, want)
		}
	}
	if n := len(p.server.liveSessions()); n != 1 {
		t.Errorf("server has %d sessions, want 1", n)
	}
	// A held tunnel shows its forward in the registry.
	held := dialApp(t, p.client.ForwardAddr("b"))
	defer held.Close()
	io.ReadFull(held, make([]byte, 2))
	// The greetings' tunnels end once both sides have closed: wait for that.
	deadline := time.Now().Add(10 * time.Second)
	for p.client.Registry().Len() > 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	snaps := p.client.Registry().Snapshots()
	if len(snaps) != 1 || snaps[0].Info.Forward != "b" {
		t.Fatalf("registry: %+v", snaps)
	}
	var names []string
	for _, f := range p.client.Forwards() {
		names = append(names, f.Name)
		if want := map[string]uint64{"b": 2}[f.Name]; f.TunnelsOpened != max(want, 1) {
			t.Errorf("forward %s opened %d tunnels, want %d", f.Name, f.TunnelsOpened, max(want, 1))
		}
	}
	if strings.Join(names, " ") != "default b "+sock.String() {
		t.Errorf("forwards %q", names)
	}
	m := gather(t, p.client)
	for name, want := range map[string]float64{"default": 2, "b": 4, sock.String(): 2} {
		key := fmt.Sprintf(`quictun_forward_bytes_total{direction="down",endpoint="client",forward=%q}`, name)
		if m[key] != want {
			t.Errorf("%s = %v, want %v", key, m[key], want)
		}
	}
	if key := `quictun_forward_tunnels_open{endpoint="client",forward="b"}`; m[key] != 1 {
		t.Errorf("%s = %v, want 1", key, m[key])
	}
}

// A spec that does not validate, two of one name, or an address in use refuse
// the whole change: the forwards stay as they were.
func TestSetForwardsRefusedWhole(t *testing.T) {
	a := startApp(t, loopbackTCP(), greeter("a"))
	defer a.close()
	p := startPair(t, pairOptions{token: a.addr.String()})
	defer p.stop()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	good := spec("new", loopbackTCP(), a.addr.String())
	keep := ForwardSpec{Name: DefaultForward, ListenOn: p.client.Addr().String(), TokenSource: a.addr.String()}
	for _, bad := range []struct {
		name  string
		specs []ForwardSpec
		want  string
	}{
		{"bad address", []ForwardSpec{good, {Name: "x", ListenOn: "nowhere", TokenSource: "tcp:1.2.3.4:5"}}, "nowhere"},
		{"bad plugin", []ForwardSpec{good, {Name: "x", ListenOn: "127.0.0.1:0", TokenSourcePlugin: "pigeon"}}, "pigeon"},
		{"twice", []ForwardSpec{good, good}, "exists"},
		{"bad name", []ForwardSpec{good, {Name: "a b", ListenOn: "127.0.0.1:0", TokenSource: "x:1"}}, "name"},
		{"in use", []ForwardSpec{good, spec("x", address.Address{Network: "tcp", Addr: busy.Addr().String()}, "x:1")}, "in use"},
		{"proxy with token", []ForwardSpec{{Name: "x", ListenOn: "127.0.0.1:0", Proxy: ProxySOCKS5, TokenSource: "x:1"}}, "no token source"},
		{"unknown proxy", []ForwardSpec{{Name: "x", ListenOn: "127.0.0.1:0", Proxy: "socks4"}}, "socks4"},
	} {
		err := p.client.SetForwards(append([]ForwardSpec{keep}, bad.specs...))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want one naming %q", bad.name, err, bad.want)
		}
		if fs := p.client.Forwards(); len(fs) != 1 || fs[0].Name != DefaultForward {
			t.Fatalf("%s: forwards now %+v", bad.name, fs)
		}
	}
	if got := hello(t, p.client.Addr()); got != "a" {
		t.Fatalf("old forward reached %q", got)
	}
	if err := p.client.RemoveForward("nope"); !errors.Is(err, ErrNoForward) {
		t.Errorf("remove unknown: %v", err)
	}
	if err := p.client.AddForward(keep); !errors.Is(err, ErrForwardExists) {
		t.Errorf("add existing: %v", err)
	}
}

// While a transfer on one forward runs, forwards are added, changed and
// removed around it: the transfer's every byte arrives, the added forward
// works at once, the changed one reaches its new target on the same address,
// and the removed one refuses new connections while its live tunnel drains.
func TestSetForwardsWhileATransferRuns(t *testing.T) {
	a := startApp(t, loopbackTCP(), echo)
	defer a.close()
	b := startApp(t, loopbackTCP(), greeter("b"))
	defer b.close()
	c := startApp(t, loopbackTCP(), greeter("c"))
	defer c.close()
	sock := address.Address{Network: address.Unix, Addr: filepath.Join(t.TempDir(), "change.sock")}
	transfer, gone := spec("transfer", loopbackTCP(), a.addr.String()), spec("gone", loopbackTCP(), b.addr.String())
	changing := spec("changing", sock, b.addr.String())
	p := startPair(t, pairOptions{token: a.addr.String(), clientMods: func(cfg *ClientConfig) {
		cfg.Forwards = []ForwardSpec{transfer, gone, changing}
		cfg.DrainTimeout = 30 * time.Second // the drained tunnel below ends by itself
	}})
	defer p.stop()
	transfer.ListenOn = "tcp:" + p.client.ForwardAddr("transfer").String()
	gone.ListenOn = "tcp:" + p.client.ForwardAddr("gone").String()

	data := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{7}).Read(data)
	tc := dialApp(t, p.client.ForwardAddr("transfer"))
	defer tc.Close()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(tc); got <- b }()
	tc.Write(data[:len(data)/2])

	drained := dialApp(t, p.client.ForwardAddr("gone"))
	defer drained.Close()
	if _, err := io.ReadFull(drained, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	goneAddr := p.client.ForwardAddr("gone")

	changing.TokenSource = c.addr.String()
	added := spec("added", loopbackTCP(), c.addr.String())
	if err := p.client.SetForwards([]ForwardSpec{transfer, changing, added}); err != nil {
		t.Fatal(err)
	}
	tc.Write(data[len(data)/2:])
	closeWrite(tc)

	if got := hello(t, p.client.ForwardAddr("added")); got != "c" {
		t.Errorf("added forward reached %q", got)
	}
	if got := hello(t, p.client.ForwardAddr("changing")); got != "c" {
		t.Errorf("changed forward reached %q, want its new target", got)
	}
	if p.client.ForwardAddr("gone") != nil {
		t.Error("removed forward still listed")
	}
	if conn, err := net.DialTimeout("tcp", goneAddr.String(), time.Second); err == nil {
		conn.Close()
		t.Error("removed forward still accepts")
	}
	// The removed forward's tunnel still carries both ways.
	drained.Write([]byte("still here"))
	buf := make([]byte, 10)
	drained.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(drained, buf); err != nil || string(buf) != "still here" {
		t.Errorf("drained tunnel: %q, %v", buf, err)
	}
	drained.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			t.Fatalf("transfer: %d bytes back of %d, intact %v", len(b), len(data), bytes.Equal(b, data))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("transfer did not end")
	}
}

// A removed forward's tunnel that outlives DrainTimeout is closed, and the
// rest of the client keeps working.
func TestRemovedForwardClosesTunnelsAfterDrain(t *testing.T) {
	a := startApp(t, loopbackTCP(), greeter("a"))
	defer a.close()
	p := startPair(t, pairOptions{token: a.addr.String(), clientMods: func(cfg *ClientConfig) {
		cfg.Forwards = []ForwardSpec{spec("other", loopbackTCP(), a.addr.String())}
		cfg.DrainTimeout = 200 * time.Millisecond
	}})
	defer p.stop()
	held := dialApp(t, p.client.Addr())
	defer held.Close()
	io.ReadFull(held, make([]byte, 2))
	if err := p.client.RemoveForward(DefaultForward); err != nil {
		t.Fatal(err)
	}
	held.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Closed hard (a reset) or not: what matters is that it ends.
	if _, err := io.ReadAll(held); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("held tunnel not closed after the drain: %v", err)
	}
	if got := hello(t, p.client.ForwardAddr("other")); got != "a" {
		t.Fatalf("other forward reached %q", got)
	}
}
