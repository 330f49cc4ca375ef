// Package api is an endpoint's REST API: the live tunnels, one tunnel, closing
// a tunnel, and health. It reads registry snapshots, so it never takes a lock a
// pump waits on, and it bounds what a slow or hostile HTTP client can hold.
package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// Token, when set, must come as "Authorization: Bearer TOKEN" on every
	// request but /healthz.
	Token  string
	Logger *slog.Logger
}

// Server serves the API of one endpoint.
type Server struct {
	ln      net.Listener
	http    *fasthttp.Server
	reg     *engine.Registry
	status  func() any
	metrics fasthttp.RequestHandler
	token   [sha256.Size]byte // hash of the bearer token; zero when none
	guarded bool
	start   time.Time
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
	s := &Server{ln: ln, reg: o.Registry, status: o.Status, start: time.Now()}
	if o.Gatherer != nil {
		s.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 10 * time.Second,
		}))
	}
	if o.Token != "" {
		s.token, s.guarded = sha256.Sum256([]byte(o.Token)), true
	}
	s.http = &fasthttp.Server{
		Handler:            s.route,
		Name:               "quictun",
		ReadTimeout:        5 * time.Second,
		WriteTimeout:       10 * time.Second,
		IdleTimeout:        30 * time.Second,
		MaxRequestBodySize: 4 << 10,
		ReadBufferSize:     8 << 10,
		Concurrency:        256,
		MaxConnsPerIP:      32,
		// The worker pool's cleaner sleeps this long between rounds and only
		// sees the stop after waking, so this bounds how long it outlives
		// Shutdown.
		MaxIdleWorkerDuration: 100 * time.Millisecond,
		Logger:                slogPrinter{log},
		// Error pages are JSON like every other answer.
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			writeError(ctx, fasthttp.StatusBadRequest, "bad request: "+err.Error())
		},
	}
	return s, nil
}

// Addr is the address the API listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops the API and waits for open requests.
func (s *Server) Shutdown() error { return s.http.Shutdown() }

func (s *Server) route(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
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
		s.metrics(ctx)
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
		snaps := s.reg.Snapshots()
		out := make([]tunnelJSON, len(snaps))
		for i, sn := range snaps {
			out[i] = toJSON(sn)
		}
		writeJSON(ctx, fasthttp.StatusOK, out)
	case strings.HasPrefix(path, "/tunnels/"):
		s.tunnel(ctx, strings.TrimPrefix(path, "/tunnels/"))
	default:
		writeError(ctx, fasthttp.StatusNotFound, "no such resource: "+path)
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
