package cli

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/engine"
)

// idleEndpoint is an endpoint with no tunnels that runs until its context ends.
type idleEndpoint struct{ reg *engine.Registry }

func (e idleEndpoint) Registry() *engine.Registry    { return e.reg }
func (e idleEndpoint) Gatherer() prometheus.Gatherer { return prometheus.NewRegistry() }
func (e idleEndpoint) Status() any                   { return nil }
func (e idleEndpoint) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// The API on an address other hosts can reach, without a token, is warned
// about loudly; on loopback, or with a token, it is not.
func TestAPIBeyondLoopbackWithoutTokenWarns(t *testing.T) {
	// fasthttp keeps one process-lifetime goroutine that refreshes its Date header.
	defer goleak.VerifyNone(t, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
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
