package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quictun/quictun/endpoints/api"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
)

// Endpoint is what the API shows of a server or client endpoint.
type Endpoint interface {
	Registry() *engine.Registry
	Gatherer() prometheus.Gatherer
	Status() any
	Run(context.Context) error
}

// RunWithAPI runs an endpoint and, when httpd is set, its REST API beside it;
// the API stops once the endpoint has stopped. An API that cannot listen stops
// the start; one that fails later is logged at once and returned at the end,
// while the endpoint keeps carrying its tunnels.
func RunWithAPI(ctx context.Context, httpd, token string, ep Endpoint, log *slog.Logger) error {
	if httpd == "" {
		return ep.Run(ctx)
	}
	opts := api.Options{Registry: ep.Registry(), Gatherer: ep.Gatherer(), Status: ep.Status, Token: token, Logger: log}
	if fw, ok := ep.(api.Forwards); ok {
		opts.Forwards = fw
	}
	srv, err := api.Listen(httpd, opts)
	if err != nil {
		// The endpoint holds its sockets already: a run that is over before it
		// starts releases them.
		stopped, stop := context.WithCancel(ctx)
		stop()
		return errors.Join(&trust.OptionError{Option: "httpd-listen-on", Err: err}, ep.Run(stopped))
	}
	log.Info("REST API listening", "addr", srv.Addr().String())
	if token == "" && beyondLoopback(srv.Addr()) {
		log.Warn("ANYONE CAN USE THIS API: it listens beyond loopback without --httpd-token; "+
			"every host that can reach the port can list tunnels, read metrics and close tunnels. "+
			"Bind it to 127.0.0.1, set --httpd-token, or put an authenticating proxy in front", "addr", srv.Addr().String())
	}
	return runBeside(ctx, ep, srv, log)
}

// apiServer is what runBeside needs of *api.Server.
type apiServer interface {
	Serve() error
	Shutdown() error
}

func runBeside(ctx context.Context, ep Endpoint, srv apiServer, log *slog.Logger) error {
	served := make(chan error, 1)
	go func() {
		err := srv.Serve()
		if err != nil {
			log.Error("REST API stopped; the endpoint keeps running without it", "err", err)
		}
		served <- err
	}()
	runErr := ep.Run(ctx)
	if err := srv.Shutdown(); err != nil {
		log.Warn("REST API shutdown", "err", err)
	}
	if err := <-served; err != nil {
		return errors.Join(runErr, fmt.Errorf("REST API stopped early: %w", err))
	}
	return runErr
}

// beyondLoopback says whether addr can be reached from other hosts: any
// address but a loopback one, the unspecified address (every interface)
// included.
func beyondLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return !ok || !ta.IP.IsLoopback()
}
