package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/endpoints"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/internal/logtap"
)

// fasthttp's date updater lives as long as the process once a server starts.
var ignoreFasthttp = goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, ignoreFasthttp) }

// newServer is a real server endpoint on loopback, not yet running.
func newServer(t *testing.T, log *slog.Logger) *endpoints.Server {
	t.Helper()
	id, err := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir()}, log)
	if err != nil {
		t.Fatal(err)
	}
	parser, _ := token.NewParser("Cleartext", "")
	srv, err := endpoints.NewServer(endpoints.ServerConfig{ListenOn: "127.0.0.1:0", Parser: parser, TLS: id.TLS, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// runAsync runs f and returns a channel with its result.
func runAsync(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("did not return")
		return nil
	}
}

// The API serves beside a running endpoint, with its token, and both stop
// together when the context ends.
func TestRunWithAPIServesAndStops(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreFasthttp)
	var out logtap.Tap
	log := out.Logger(slog.LevelInfo)
	srv := newServer(t, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(func() error { return RunWithAPI(ctx, "127.0.0.1:0", "let-me-in", srv, log) })
	addr := out.WaitForMatch(t, `REST API listening" addr=(\S+)`)[1]

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	get := func(path, tok string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz", ""); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code := get("/tunnels", ""); code != 401 {
		t.Errorf("/tunnels without the token: %d", code)
	}
	if code := get("/tunnels", "let-me-in"); code != 200 {
		t.Errorf("/tunnels with the token: %d", code)
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("RunWithAPI: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the API still listens after the endpoint stopped")
	}
}

// An API address that cannot be bound stops the start with an error naming
// the option, and the endpoint releases the UDP socket it had bound.
func TestRunWithAPIBadAddress(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreFasthttp)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := newServer(t, log)
	udp := srv.Addr().String()
	err = RunWithAPI(context.Background(), taken.Addr().String(), "", srv, log)
	var oe *trust.OptionError
	if !errors.As(err, &oe) || oe.Option != "httpd-listen-on" || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("got %v", err)
	}
	again, err := net.ListenPacket("udp", udp)
	if err != nil {
		t.Fatalf("the endpoint kept its UDP socket: %v", err)
	}
	again.Close()
}

// brokenAPI is an API whose Serve fails at once: a real fasthttp server fails
// only on accept errors that a test cannot cause.
type brokenAPI struct{ shutdown chan struct{} }

func (b brokenAPI) Serve() error    { return errors.New("accept: too many open files") }
func (b brokenAPI) Shutdown() error { close(b.shutdown); return nil }

// An API that fails while the endpoint runs is logged at once, the endpoint
// keeps running, and the error is returned when it stops.
func TestRunBesideReportsAFailedAPI(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreFasthttp)
	var out logtap.Tap
	log := out.Logger(slog.LevelInfo)
	srv := newServer(t, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api := brokenAPI{shutdown: make(chan struct{})}
	done := runAsync(func() error { return runBeside(ctx, srv, api, log) })
	out.WaitForMatch(t, `level=ERROR msg="REST API stopped; the endpoint keeps running without it" err="accept: too many open files"`)
	select {
	case err := <-done:
		t.Fatalf("the endpoint stopped with its API: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	err := wait(t, done)
	if err == nil || !strings.Contains(err.Error(), "REST API stopped early: accept: too many open files") {
		t.Fatalf("got %v", err)
	}
	select {
	case <-api.shutdown:
	default:
		t.Error("the API was not shut down")
	}
}

// idleEndpoint is an endpoint with no tunnels that runs until its context ends.
type idleEndpoint struct{ reg *engine.Registry }

func (e idleEndpoint) Registry() *engine.Registry    { return e.reg }
func (e idleEndpoint) Gatherer() prometheus.Gatherer { return prometheus.NewRegistry() }
func (e idleEndpoint) Status() any                   { return nil }
func (e idleEndpoint) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// The API on an address other hosts can reach, without a token, is warned
// about loudly; on loopback, or with a token, it is not.
func TestAPIBeyondLoopbackWithoutTokenWarns(t *testing.T) {
	for _, c := range []struct {
		listen, token string
		warn          bool
	}{
		{"127.0.0.1:0", "", false},
		{"localhost:0", "", false},
		{"0.0.0.0:0", "", true},
		{"0.0.0.0:0", "s3cret", false},
	} {
		var out bytes.Buffer
		log := slog.New(slog.NewTextHandler(&out, nil))
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // the endpoint stops at once; the API has bound and logged by then
		if err := RunWithAPI(ctx, c.listen, c.token, idleEndpoint{engine.NewRegistry(engine.Config{})}, log); err != nil {
			t.Fatalf("%s: %v", c.listen, err)
		}
		if !strings.Contains(out.String(), "REST API listening") {
			t.Fatalf("%s: API did not start: %s", c.listen, out.String())
		}
		warned := strings.Contains(out.String(), "level=WARN") && strings.Contains(out.String(), "ANYONE CAN USE THIS API")
		if warned != c.warn {
			t.Errorf("%s, token %q: warned %v, want %v; log:\n%s", c.listen, c.token, warned, c.warn, out.String())
		}
	}
}
