package token

import (
	"context"
	"errors"
	"net"
)

func init() { registerSource("Fixed", newFixed) }

// fixed sends the same token for every connection: quic-tun's default, where
// the token is the server application's address ("tcp:10.0.0.5:22").
type fixed struct{ token string }

func newFixed(value string, _ SourceOptions) (Source, error) {
	if value == "" {
		return nil, errors.New("token source Fixed: empty token")
	}
	return fixed{value}, nil
}

func (f fixed) Token(context.Context, net.Addr) (string, error) { return f.token, nil }
