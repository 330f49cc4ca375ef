package cli

import (
	"context"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quictun/quictun/endpoints/api"
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
// the API stops once the endpoint has stopped.
func RunWithAPI(ctx context.Context, httpd, token string, ep Endpoint, log *slog.Logger) error {
	if httpd == "" {
		return ep.Run(ctx)
	}
	srv, err := api.Listen(httpd, api.Options{Registry: ep.Registry(), Gatherer: ep.Gatherer(), Status: ep.Status, Token: token, Logger: log})
	if err != nil {
		return err
	}
	log.Info("REST API listening", "addr", srv.Addr().String())
	if token == "" && beyondLoopback(srv.Addr()) {
		log.Warn("ANYONE CAN USE THIS API: it listens beyond loopback without --httpd-token; "+
			"every host that can reach the port can list tunnels, read metrics and close tunnels. "+
			"Bind it to 127.0.0.1, set --httpd-token, or put an authenticating proxy in front", "addr", srv.Addr().String())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	err = ep.Run(ctx)
	srv.Shutdown()
	<-served
	return err
}

// beyondLoopback says whether addr can be reached from other hosts: any
// address but a loopback one, the unspecified address (every interface)
// included.
func beyondLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return !ok || !ta.IP.IsLoopback()
}
