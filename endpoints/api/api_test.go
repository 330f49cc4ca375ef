package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/engine"
)

func TestMain(m *testing.M) {
	// fasthttp keeps one process-lifetime goroutine that refreshes its Date header.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	// A loopback IP of its own: see loopbackIP.
	ln, err := net.Listen("tcp", net.JoinHostPort(loopbackIP(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-acc
}

// liveTunnel runs a real tunnel between two loopback TCP pairs.
func liveTunnel(t *testing.T, reg *engine.Registry, info engine.Info) (clientApp net.Conn, tun *engine.Tunnel, done chan error) {
	clientApp, clientSide := tcpPair(t)
	serverSide, serverApp := tcpPair(t)
	t.Cleanup(func() { clientApp.Close(); serverApp.Close() })
	tun = reg.Open(t.Context(), info)
	done = make(chan error, 1)
	go func() { done <- tun.Run(engine.ConnSide(clientSide), engine.ConnSide(serverSide)) }()
	go io.Copy(serverApp, serverApp)
	return clientApp, tun, done
}

func startAPI(t *testing.T, o Options) string {
	t.Helper()
	return startAPIWith(t, o, nil)
}

// startAPIWith lets tune change the server's limits before it serves.
func startAPIWith(t *testing.T, o Options, tune func(*Server)) string {
	t.Helper()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Listen("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		s.Shutdown()
		<-served
	})
	return "http://" + s.Addr().String()
}

func call(t *testing.T, method, url, token string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func TestTunnelsListGetAndKill(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg})
	code, body, _ := call(t, "GET", base+"/tunnels", "")
	if code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("empty list: %d %s", code, body)
	}

	app, tun, done := liveTunnel(t, reg, engine.Info{Endpoint: engine.ClientEndpoint, StreamID: 4,
		ClientAppAddr: "127.0.0.1:5555", ServerAppAddr: "10.0.0.5:22", RemoteEndpointAddr: "198.18.0.2:7500"})
	app.Write([]byte("ping"))
	io.ReadFull(app, make([]byte, 4))
	// A pump counts a chunk after writing it on: the reader can be first.
	waitFor(t, "the echo counted", func() bool { return tun.BytesUp() == 4 && tun.BytesDown() == 4 })

	code, body, hdr := call(t, "GET", base+"/tunnels", "")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("list: %d %s", code, hdr.Get("Content-Type"))
	}
	var list []map[string]any
	if err := json.Unmarshal(body, &list); err != nil || len(list) != 1 {
		t.Fatalf("list: %v %s", err, body)
	}
	got := list[0]
	for k, want := range map[string]any{
		"uuid": tun.ID.String(), "streamId": 4.0, "endpoint": "client", "clientAppAddr": "127.0.0.1:5555",
		"serverAppAddr": "10.0.0.5:22", "remoteEndpointAddr": "198.18.0.2:7500", "protocol": "",
		"protocolProperties": nil, "bytesUp": 4.0, "bytesDown": 4.0, "state": "open",
	} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, got["createdAt"].(string)); err != nil {
		t.Errorf("createdAt is not RFC 3339: %v", got["createdAt"])
	}

	code, body, _ = call(t, "GET", base+"/tunnels/"+tun.ID.String(), "")
	if code != 200 || !bytes.Contains(body, []byte(tun.ID.String())) {
		t.Fatalf("get one: %d %s", code, body)
	}
	code, _, _ = call(t, "DELETE", base+"/tunnels/"+tun.ID.String(), "")
	if code != 200 {
		t.Fatalf("delete: %d", code)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "operator") {
			t.Fatalf("tunnel ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DELETE did not close the tunnel")
	}
	app.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := app.Read(make([]byte, 1)); err == nil {
		t.Fatal("application still connected after DELETE")
	}
	if code, _, _ := call(t, "GET", base+"/tunnels/"+tun.ID.String(), ""); code != 404 {
		t.Fatalf("closed tunnel: %d, want 404", code)
	}
}

func TestErrorsAreJSONWithTheRightStatus(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg})
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/nope", 404},
		{"POST", "/tunnels", 405},
		{"PUT", "/tunnels/00000000-0000-0000-0000-000000000000", 405},
		{"GET", "/tunnels/not-a-uuid", 400},
		{"GET", "/tunnels/00000000-0000-0000-0000-000000000000", 404},
		{"DELETE", "/tunnels/00000000-0000-0000-0000-000000000000", 404},
		{"GET", "/metrics", 404}, // no gatherer
	} {
		code, body, _ := call(t, c.method, base+c.path, "")
		var e struct {
			Error  string `json:"error"`
			Status int    `json:"status"`
		}
		if code != c.code || json.Unmarshal(body, &e) != nil || e.Error == "" || e.Status != c.code {
			t.Errorf("%s %s: %d %s, want %d with a JSON error", c.method, c.path, code, body, c.code)
		}
	}
}

func TestBearerToken(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg, Token: "s3cret"})
	if code, _, h := call(t, "GET", base+"/tunnels", ""); code != 401 || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d", code)
	}
	if code, _, _ := call(t, "GET", base+"/tunnels", "wrong"); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	if code, _, _ := call(t, "GET", base+"/tunnels", "s3cret"); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	if code, _, _ := call(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatalf("healthz must stay open for probes: %d", code)
	}
}

func TestMetricsExposition(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	pr := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "quictun_test_total", Help: "test"})
	c.Add(3)
	pr.MustRegister(c)
	base := startAPI(t, Options{Registry: reg, Gatherer: pr})
	code, body, hdr := call(t, "GET", base+"/metrics", "")
	if code != 200 || !strings.Contains(string(body), "quictun_test_total 3") || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %s %s", code, hdr.Get("Content-Type"), body)
	}
}

// A client that opens connections and sends half a request must not stop the
// API from answering others, and is dropped after the read timeout.
func TestSlowClientsDoNotBlockTheAPI(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg})
	addr := strings.TrimPrefix(base, "http://")
	var slow []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "))
		slow = append(slow, c)
	}
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	start := time.Now()
	if code, _, _ := call(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatalf("healthz behind slow clients: %d", code)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("answer took %v behind slow clients", d)
	}
}

// An endpoint that stops at once stops its API before Serve got going; Serve
// must still return.
func TestShutdownBeforeServe(t *testing.T) {
	s, err := Listen("127.0.0.1:0", Options{Registry: engine.NewRegistry(engine.Config{}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	s.Shutdown()
	go func() { served <- s.Serve() }()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
}

// loopbackIP is a random 127.x.y.z. The machine's tests leave tens of thousands
// of loopback connections in TIME_WAIT; once the even ephemeral ports run out,
// a dial from 127.0.0.1 can pick a source port that mirrors a TIME_WAIT entry of
// a fresh 127.0.0.1 listener and be reset. Own addresses keep tuples apart.
func loopbackIP() string {
	return net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254))).String()
}
