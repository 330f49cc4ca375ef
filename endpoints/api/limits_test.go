package api

import (
	"bufio"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/quictun/quictun/engine"
)

// rawRequest sends req on a new connection from localIP and reads the answer.
func rawRequest(t *testing.T, addr, localIP, req string) (*http.Response, []byte) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The server may answer and close before it read all of a request it
	// refuses, so a failed write is not the test's failure; the answer is.
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// checkJSONError fails unless the answer is a JSON error with the status.
func checkJSONError(t *testing.T, what string, resp *http.Response, body []byte, status int) {
	t.Helper()
	var e struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &e) != nil || e.Error == "" || e.Status != status {
		t.Errorf("%s: %d %s %s, want %d with a JSON error", what, resp.StatusCode, resp.Header.Get("Content-Type"), body, status)
	}
}

const getHealthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

// Past the per-address and the total connection limits, new connections get
// a JSON 429 and 503 (fasthttp's own answers are plain text).
func TestConnectionLimitsAnswerJSON(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPIWith(t, Options{Registry: reg}, func(s *Server) { s.ln.total, s.ln.perIP = 3, 2 })
	addr := strings.TrimPrefix(base, "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hold := func(localIP string) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// A request answered proves the connection was admitted.
		io.WriteString(c, getHealthz)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection from %s: %v %v", localIP, resp, err)
		}
		resp.Body.Close()
	}
	hold("127.0.0.1")
	hold("127.0.0.1")
	resp, body := rawRequest(t, addr, "127.0.0.1", getHealthz)
	checkJSONError(t, "third connection from one address", resp, body, http.StatusTooManyRequests)
	hold("127.0.0.2")
	resp, body = rawRequest(t, addr, "127.0.0.3", getHealthz)
	checkJSONError(t, "fourth connection in all", resp, body, http.StatusServiceUnavailable)
	// A slot freed is a slot for the next one.
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		if resp, _ := rawRequest(t, addr, "127.0.0.3", getHealthz); resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's slot was not given back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// What fasthttp cannot read gets the status that fits, in JSON.
func TestRequestErrorsAnswerJSON(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPIWith(t, Options{Registry: reg}, func(s *Server) { s.http.ReadTimeout = 300 * time.Millisecond })
	addr := strings.TrimPrefix(base, "http://")
	for _, c := range []struct {
		what, req string
		status    int
	}{
		{"header over the read buffer", "GET /tunnels?" + strings.Repeat("a", 64<<10) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 431},
		{"body over the limit", "POST /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8192\r\n\r\n" + strings.Repeat("b", 8192), 413},
		{"request not finished in time", "GET /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", 408},
		{"garbage", "BLAH\r\n\r\n", 400},
	} {
		resp, body := rawRequest(t, addr, "", c.req)
		checkJSONError(t, c.what, resp, body, c.status)
	}
}

// blockingGatherer holds every scrape until released.
type blockingGatherer struct {
	entered chan struct{}
	release chan struct{}
}

func (g blockingGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.entered <- struct{}{}
	<-g.release
	return nil, nil
}

// promhttp's own errors (here its in-flight limit of 4) are JSON too.
func TestMetricsErrorsAreJSON(t *testing.T) {
	g := blockingGatherer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	var gatherer prometheus.Gatherer = g
	base := startAPI(t, Options{Registry: engine.NewRegistry(engine.Config{}), Gatherer: gatherer})
	addr := strings.TrimPrefix(base, "http://")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			resp, _ := rawRequest(t, addr, "", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Errorf("held scrape: %d", resp.StatusCode)
			}
		})
	}
	for range 4 {
		<-g.entered
	}
	resp, body := rawRequest(t, addr, "", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	checkJSONError(t, "fifth scrape at once", resp, body, http.StatusServiceUnavailable)
	close(g.release)
	wg.Wait()
}

// Clients that ask for /tunnels and never read hold little memory each, and
// only so many of them at once; others are refused (503) while /healthz and
// the rest keep answering, and every slot comes back when they go.
func TestSlowListingsHoldBoundedMemory(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	const listings = 2
	var srv *Server
	base := startAPIWith(t, Options{Registry: reg}, func(s *Server) {
		s.listings = make(chan struct{}, listings)
		srv = s
	})
	addr := strings.TrimPrefix(base, "http://")
	inFlight := func() int { return len(srv.listings) }

	// 80 tunnels whose properties make about 100 KB of JSON each ('<' is
	// escaped as \u003c): 8 MB in all, more than loopback buffers take (the
	// send buffer grows to 4 MB at most here). SetProtocol takes them as they
	// are; only what sniffers report is cut to sniff.MaxProps.
	const n = 80
	var tunnels []*engine.Tunnel
	var dones []chan error
	defer func() {
		for i, tun := range tunnels {
			tun.Kill()
			<-dones[i]
		}
	}()
	for i := range n {
		_, tun, done := liveTunnel(t, reg, engine.Info{Endpoint: engine.ServerEndpoint, StreamID: int64(4 * i)})
		props := map[string]string{}
		for k := range 64 {
			props[strconv.Itoa(k)] = strings.Repeat("<", 256)
		}
		tun.SetProtocol("big", props)
		tunnels, dones = append(tunnels, tun), append(dones, done)
	}
	const fullSize = n * 64 * 256 * 6

	before := liveHeap()
	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	for range listings {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		io.WriteString(c, "GET /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		slow = append(slow, c)
	}
	waitFor(t, "both listings under way", func() bool { return inFlight() == listings })
	// Both are stuck on their clients (else a slot would be free by now): a
	// third is refused, the rest of the API answers.
	resp, body := rawRequest(t, addr, "", "GET /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	checkJSONError(t, "listing past the limit", resp, body, http.StatusServiceUnavailable)
	if code, _, _ := call(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatalf("healthz with listings stuck: %d", code)
	}
	during := liveHeap()
	// Listings built whole would hold 2 x 8 MB and more; streamed, each holds
	// about one tunnel's JSON (twice, for the indentation) and some buffers.
	if grown := during - before; grown > fullSize/4 {
		t.Errorf("heap grew by %d bytes with %d stuck listings of %d bytes", grown, listings, fullSize)
	}
	for _, c := range slow {
		c.Close()
	}
	slow = nil
	waitFor(t, "listing slots given back", func() bool { return inFlight() == 0 })
	// A listing that is read is whole and valid JSON.
	code, body, _ := call(t, "GET", base+"/tunnels", "")
	var list []map[string]any
	if err := json.Unmarshal(body, &list); code != 200 || err != nil || len(list) != n {
		t.Fatalf("listing: %d, %v, %d tunnels", code, err, len(list))
	}
}

// liveHeap is the heap that the garbage collector found reachable, right after
// collecting twice (what sync.Pools keep, json's encoders and fasthttp's
// buffers, survives one collection). What is allocated during a collection
// counts as reachable, so while the listings still creep forward (the kernel
// grows the socket's send buffer for a while) one reading can be high: the
// smallest of a few is taken.
func liveHeap() int64 {
	least := int64(math.MaxInt64)
	for range 5 {
		runtime.GC()
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		least = min(least, int64(s[0].Value.Uint64()))
		time.Sleep(20 * time.Millisecond)
	}
	return least
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}
