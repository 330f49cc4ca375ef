package token

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/quictun/quictun/endpoints/address"
)

func init() { registerParser("Cleartext", newCleartext) }

// cleartext reads the address straight from the token, as quic-tun does. With
// key "base64" the token is the base64 of the address (standard alphabet,
// padded or not).
type cleartext struct{ base64 bool }

func newCleartext(key string) (Parser, error) {
	switch strings.ToLower(key) {
	case "":
		return cleartext{}, nil
	case "base64":
		return cleartext{base64: true}, nil
	}
	return nil, fmt.Errorf("token parser Cleartext: unknown key %q (want \"\" or \"base64\")", key)
}

func (c cleartext) Parse(token []byte) (address.Address, error) {
	text := string(token)
	if c.base64 {
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(text)
		}
		if err != nil {
			return address.Address{}, fmt.Errorf("token is not base64: %w", err)
		}
		text = string(b)
	}
	a, err := address.Parse(text)
	if err != nil {
		// Not address.Parse's error, which quotes the text: a token that is
		// not an address may be a credential, and must not reach a log.
		return address.Address{}, errors.New("token is not an address (want tcp:HOST:PORT, unix:PATH, udp:HOST:PORT or HOST:PORT)")
	}
	return a, nil
}
