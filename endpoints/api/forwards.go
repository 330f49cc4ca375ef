package api

import (
	"errors"

	"github.com/valyala/fasthttp"
)

// Forwards is a client endpoint's forwards, as the API lists, adds and
// removes them. Errors that carry an HTTP status (see StatusError) are
// answered with it; others are 400.
type Forwards interface {
	ListForwards() any
	// AddForwardJSON starts the forward that body describes and returns it
	// as the listing shows it.
	AddForwardJSON(body []byte) (any, error)
	// RemoveForward stops a forward: it accepts no more, and its live
	// tunnels drain.
	RemoveForward(name string) error
}

// StatusError is an error with the HTTP status it calls for.
type StatusError interface {
	error
	HTTPStatus() int
}

func (s *Server) serveForwards(ctx *fasthttp.RequestCtx) {
	if !allow(ctx, fasthttp.MethodGet, fasthttp.MethodPost) {
		return
	}
	if ctx.IsGet() {
		writeJSON(ctx, fasthttp.StatusOK, s.forwards.ListForwards())
		return
	}
	f, err := s.forwards.AddForwardJSON(ctx.PostBody())
	if err != nil {
		writeError(ctx, forwardStatus(err), err.Error())
		return
	}
	writeJSON(ctx, fasthttp.StatusCreated, f)
}

func (s *Server) forward(ctx *fasthttp.RequestCtx, name string) {
	if !allow(ctx, fasthttp.MethodDelete) {
		return
	}
	if err := s.forwards.RemoveForward(name); err != nil {
		writeError(ctx, forwardStatus(err), err.Error())
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"name": name, "status": "draining"})
}

func forwardStatus(err error) int {
	var se StatusError
	if errors.As(err, &se) {
		return se.HTTPStatus()
	}
	return fasthttp.StatusBadRequest
}
