// Package api is an endpoint's REST API: the live tunnels, one tunnel, closing
// a tunnel, and health, and a live dashboard over them at /. It reads registry snapshots, so it never takes a lock a
// pump waits on, and it bounds what a slow or hostile HTTP client can hold.
package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/quictun/quictun/engine"
)

// Options is what the API serves and how it guards it.
type Options struct {
	Registry *engine.Registry
	// Gatherer is served on /metrics; nil serves no metrics.
	Gatherer prometheus.Gatherer
	// Status is served on /sessions: the endpoint's sessions and its
	// loss-recovery layer; nil serves nothing there.
	Status func() any
	// Forwards, when set (a client endpoint), is served on /forwards.
	Forwards Forwards
	// Token, when set, must come as "Authorization: Bearer TOKEN" on every
	// request but /healthz.
	Token  string
	Logger *slog.Logger
}

// maxListings bounds the GET /tunnels answers in flight at once; past it a
// listing is refused with 503. Each listing streams its tunnels one at a time:
// it holds 8 bytes per live tunnel (the list), one tunnel's JSON (a few KiB)
// and about 32 KiB of buffers (fasthttp's pipe of 5 x 4 KiB and its writers),
// for at most the write timeout. So all of them together hold at most
// maxListings x (8 B x tunnels + about 40 KiB), whatever their clients do.
const maxListings = 16

// Server serves the API of one endpoint.
type Server struct {
	ln       *limitListener
	listings chan struct{} // a slot per GET /tunnels in flight
	http     *fasthttp.Server
	reg      *engine.Registry
	status   func() any
	forwards Forwards
	metrics  fasthttp.RequestHandler
	token    [sha256.Size]byte // hash of the bearer token; zero when none
	guarded  bool
	// listenName is the host name the API was told to listen on, lower
	// case; empty when that was an address (see hostAllowed).
	listenName string
	start      time.Time
}

// Listen binds the API's TCP address.
func Listen(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("API listen on %s: %w", addr, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{ln: newLimitListener(ln, maxConns, maxConnsPerIP), listings: make(chan struct{}, maxListings),
		reg: o.Registry, status: o.Status, forwards: o.Forwards, start: time.Now()}
	if o.Gatherer != nil {
		s.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 10 * time.Second,
		}))
	}
	if o.Token != "" {
		s.token, s.guarded = sha256.Sum256([]byte(o.Token)), true
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if name := hostName(host); name != "" && !isIP(name) {
			s.listenName = name
		}
	}
	s.http = &fasthttp.Server{
		Handler:            s.route,
		Name:               "quictun",
		ReadTimeout:        5 * time.Second,
		WriteTimeout:       10 * time.Second,
		IdleTimeout:        30 * time.Second,
		MaxRequestBodySize: 4 << 10,
		ReadBufferSize:     8 << 10,
		// The limit listener admits at most maxConns connections, so this is
		// never reached (it only leaves room for connections that are closed
		// but whose worker has not yet returned).
		Concurrency: 2 * maxConns,
		// The worker pool's cleaner sleeps this long between rounds and only
		// sees the stop after waking, so this bounds how long it outlives
		// Shutdown.
		MaxIdleWorkerDuration: 100 * time.Millisecond,
		Logger:                slogPrinter{log},
		// Parse errors name the error, not the request's bytes.
		SecureErrorLogMessage: true,
		// Error pages are JSON like every other answer.
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			status, msg := requestErrorStatus(err)
			writeError(ctx, status, msg)
		},
	}
	return s, nil
}

// Addr is the address the API listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	// No connection is rejected after the accept loop ended: the last drains
	// are all started.
	s.ln.drains.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// requestErrorStatus maps what fasthttp failed to read to the status it calls
// for: a header over the read buffer is 431, a body over the limit 413, a
// client too slow to send its request 408, anything else 400.
func requestErrorStatus(err error) (int, string) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.As(err, &small):
		return fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fasthttp.StatusRequestEntityTooLarge, "request body too large"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fasthttp.StatusRequestTimeout, "request not received in time"
	}
	return fasthttp.StatusBadRequest, "bad request: " + err.Error()
}

// Shutdown stops the API and waits for open requests. It may come before
// Serve has started: Serve then returns at once.
func (s *Server) Shutdown() error {
	err := s.http.Shutdown()
	// fasthttp closes only the listeners that Serve has registered, so a
	// Shutdown that came first would leave Serve accepting forever.
	if cerr := s.ln.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

func (s *Server) route(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	if path != "/healthz" && !s.guarded && !s.hostAllowed(ctx) {
		writeError(ctx, fasthttp.StatusForbidden, fmt.Sprintf("Host %q does not name this API: without a token it "+
			"answers only to localhost, a loopback address or the address it listens on (set a token to serve other names)",
			ctx.Request.Header.Host()))
		return
	}
	if !originAllowed(ctx) {
		writeError(ctx, fasthttp.StatusForbidden, fmt.Sprintf("Origin %q is not this API's: cross-site requests may not change anything",
			ctx.Request.Header.Peek("Origin")))
		return
	}
	// The dashboard's files hold no data: the page brings the token itself.
	if name, ok := dashboardFile(path); ok {
		serveDashboard(ctx, name)
		return
	}
	if path != "/healthz" && !s.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="quictun"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	switch {
	case path == "/metrics" && s.metrics != nil:
		if !allow(ctx, fasthttp.MethodGet) {
			return
		}
		s.serveMetrics(ctx)
	case path == "/healthz":
		if !allow(ctx, fasthttp.MethodGet) {
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{
			"status": "ok", "tunnels": s.reg.Len(), "uptimeSeconds": int64(time.Since(s.start).Seconds()),
		})
	case path == "/sessions" && s.status != nil:
		if !allow(ctx, fasthttp.MethodGet) {
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, s.status())
	case path == "/tunnels" || path == "/tunnels/":
		if !allow(ctx, fasthttp.MethodGet) {
			return
		}
		s.listTunnels(ctx)
	case strings.HasPrefix(path, "/tunnels/"):
		s.tunnel(ctx, strings.TrimPrefix(path, "/tunnels/"))
	case (path == "/forwards" || path == "/forwards/") && s.forwards != nil:
		s.serveForwards(ctx)
	case strings.HasPrefix(path, "/forwards/") && s.forwards != nil:
		s.forward(ctx, strings.TrimPrefix(path, "/forwards/"))
	default:
		writeError(ctx, fasthttp.StatusNotFound, "no such resource: "+path)
	}
}

// listTunnels streams the live tunnels as a JSON array, snapshotting each one
// as it is written, so that a client reading slowly holds a bounded amount of
// memory (see maxListings) rather than the whole answer.
func (s *Server) listTunnels(ctx *fasthttp.RequestCtx) {
	select {
	case s.listings <- struct{}{}:
	default:
		ctx.Response.Header.Set("Retry-After", "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("too many /tunnels answers in flight (limit %d)", maxListings))
		return
	}
	tunnels := s.reg.Tunnels()
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	// fasthttp runs the writer on a goroutine of its own at once, and ends
	// it (writes fail) when the answer is done or the connection fails.
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer func() { <-s.listings }()
		if _, err := w.WriteString("["); err != nil {
			return
		}
		for i, t := range tunnels {
			tunnels[i] = nil // let go of each tunnel once written
			b, err := json.MarshalIndent(toJSON(t.Snapshot()), "  ", "  ")
			if err != nil {
				return
			}
			sep := ",\n  "
			if i == 0 {
				sep = "\n  "
			}
			w.WriteString(sep)
			// In pieces no larger than w's buffer: a larger write would go
			// to fasthttp's pipe whole, and the pipe holds several.
			for len(b) > 0 {
				n := min(len(b), w.Size())
				if _, err := w.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
		}
		if len(tunnels) > 0 {
			w.WriteString("\n")
		}
		w.WriteString("]\n")
	})
}

// serveMetrics serves /metrics; its errors (promhttp's in-flight limit and
// timeout, both 503) become JSON like every other error.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	s.metrics(ctx)
	if status := ctx.Response.StatusCode(); status >= 400 {
		msg := strings.TrimSpace(string(ctx.Response.Body()))
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		ctx.Response.ResetBody()
		writeError(ctx, status, "metrics: "+msg)
	}
}

func (s *Server) tunnel(ctx *fasthttp.RequestCtx, idText string) {
	if !allow(ctx, fasthttp.MethodGet, fasthttp.MethodDelete) {
		return
	}
	id, err := uuid.Parse(idText)
	if err != nil || len(idText) != 36 {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("%q is not a tunnel uuid", idText))
		return
	}
	t, ok := s.reg.Get(id)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "no live tunnel "+id.String())
		return
	}
	if ctx.IsDelete() {
		t.Kill()
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"uuid": id.String(), "status": "closing"})
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, toJSON(t.Snapshot()))
}

// authorized compares hashes in constant time, so neither the token nor its
// length leaks through timing.
func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	if !s.guarded {
		return true
	}
	got, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], s.token[:]) == 1
}

func allow(ctx *fasthttp.RequestCtx, methods ...string) bool {
	m := string(ctx.Method())
	for _, ok := range methods {
		if m == ok {
			return true
		}
	}
	ctx.Response.Header.Set("Allow", strings.Join(methods, ", "))
	writeError(ctx, fasthttp.StatusMethodNotAllowed, "method "+m+" not allowed here")
	return false
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	enc := json.NewEncoder(ctx)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	writeJSON(ctx, status, map[string]any{"error": msg, "status": status})
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.log.Debug("API", "msg", fmt.Sprintf(format, args...))
}
