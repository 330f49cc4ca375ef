package cli

import (
	"context"
	"log/slog"

	"github.com/quictun/quictun/endpoints/api"
	"github.com/quictun/quictun/engine"
)

// RunWithAPI runs an endpoint and, when httpd is set, its REST API beside it;
// the API stops once the endpoint has stopped.
func RunWithAPI(ctx context.Context, httpd string, reg *engine.Registry, log *slog.Logger, run func(context.Context) error) error {
	if httpd == "" {
		return run(ctx)
	}
	srv, err := api.Listen(httpd, reg, log)
	if err != nil {
		return err
	}
	log.Info("REST API listening", "addr", srv.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	err = run(ctx)
	srv.Shutdown()
	<-served
	return err
}
