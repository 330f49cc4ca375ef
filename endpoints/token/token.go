// Package token holds the two halves of tunnel addressing: token sources, which
// a client endpoint asks what to send for an application connection, and token
// parsers, which a server endpoint asks which address a token names. Each
// plugin is one file; add one to the tables below.
package token

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

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

// sources and parsers map lower-case plugin names to constructors.
var (
	sources = map[string]func(value string) (Source, error){
		"fixed": newFixed,
		"file":  newFile,
		"http":  newHTTP,
	}
	parsers = map[string]func(key string) (Parser, error){
		"cleartext": newCleartext,
	}
)

// NewSource builds the named token source (case-insensitive) from its value:
// the token itself for Fixed, a file path for File, a URL for Http.
func NewSource(plugin, value string) (Source, error) {
	mk, ok := sources[strings.ToLower(plugin)]
	if !ok {
		return nil, fmt.Errorf("unknown token source plugin %q (have %s)", plugin, names(sources))
	}
	return mk(value)
}

// NewParser builds the named token parser (case-insensitive) with its key.
func NewParser(plugin, key string) (Parser, error) {
	mk, ok := parsers[strings.ToLower(plugin)]
	if !ok {
		return nil, fmt.Errorf("unknown token parser plugin %q (have %s)", plugin, names(parsers))
	}
	return mk(key)
}

func names[V any](m map[string]V) string {
	var ns []string
	for n := range m {
		ns = append(ns, n)
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
