// Package token holds the two halves of tunnel addressing: token sources, which
// a client endpoint asks what to send for an application connection, and token
// parsers, which a server endpoint asks which address a token names. Each
// plugin is one file that registers itself (registerSource, registerParser) in
// its init function; nothing else needs to know it.
package token

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/quictun/quictun/endpoints/address"
)

// Source makes the token for a new application connection on the client
// endpoint. clientAddr is the application's address (nil or empty for some
// UNIX-socket peers).
type Source interface {
	Token(ctx context.Context, clientAddr net.Addr) (string, error)
}

// Parser turns a token received by the server endpoint into the address of the
// server application.
type Parser interface {
	Parse(token []byte) (address.Address, error)
}

// SourceOptions are the settings every token source is built with; each source
// uses those that apply to it. Zero values mean the defaults.
type SourceOptions struct {
	// Timeout bounds one lookup that waits on something outside the process:
	// the Http source's request (default DefaultSourceTimeout).
	Timeout time.Duration
	// Logger gets a source's warnings (the Http source's about cleartext);
	// nil means slog.Default().
	Logger *slog.Logger
}

// DefaultSourceTimeout is SourceOptions.Timeout when it is zero.
const DefaultSourceTimeout = 5 * time.Second

// timeout is o.Timeout with its default, or an error for a negative one.
func (o SourceOptions) timeout() (time.Duration, error) {
	switch {
	case o.Timeout < 0:
		return 0, fmt.Errorf("timeout %v is negative", o.Timeout)
	case o.Timeout == 0:
		return DefaultSourceTimeout, nil
	}
	return o.Timeout, nil
}

type (
	newSourceFunc func(value string, o SourceOptions) (Source, error)
	newParserFunc func(key string) (Parser, error)
)

// plugin is a registered constructor under the name users write.
type plugin[F any] struct {
	name string // as documented ("Fixed"); looked up case-insensitively
	mk   F
}

// sources and parsers map lower-case plugin names to their constructors; the
// plugins' files fill them at init.
var (
	sources = map[string]plugin[newSourceFunc]{}
	parsers = map[string]plugin[newParserFunc]{}
)

// registerSource adds a token source plugin. A name registered twice is a bug
// in this package, found at start.
func registerSource(name string, mk newSourceFunc) { register(sources, name, mk) }

// registerParser adds a token parser plugin.
func registerParser(name string, mk newParserFunc) { register(parsers, name, mk) }

func register[F any](table map[string]plugin[F], name string, mk F) {
	key := strings.ToLower(name)
	if _, dup := table[key]; dup {
		panic("token: plugin " + name + " registered twice")
	}
	table[key] = plugin[F]{name: name, mk: mk}
}

// NewSource builds the named token source (case-insensitive) from its value:
// the token itself for Fixed, a file path for File, a URL for Http.
func NewSource(name, value string, o SourceOptions) (Source, error) {
	p, ok := sources[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("unknown token source plugin %q (have %s)", name, names(sources))
	}
	return p.mk(value, o)
}

// NewParser builds the named token parser (case-insensitive) with its key.
func NewParser(name, key string) (Parser, error) {
	p, ok := parsers[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("unknown token parser plugin %q (have %s)", name, names(parsers))
	}
	return p.mk(key)
}

func names[F any](table map[string]plugin[F]) string {
	var ns []string
	for _, p := range table {
		ns = append(ns, p.name)
	}
	slices.Sort(ns)
	return strings.Join(ns, ", ")
}

// clientIP is the IP of an application connection, if it has one.
func clientIP(a net.Addr) (net.IP, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP, true
	case *net.UDPAddr:
		return a.IP, true
	}
	if a == nil {
		return nil, false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return nil, false
	}
	ip := net.ParseIP(host)
	return ip, ip != nil
}
