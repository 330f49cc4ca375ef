package token

import (
	"fmt"

	"github.com/quictun/quictun/endpoints/address"
)

// Describe shows a token for a log line: as the address it is, when it is one
// (the usual case, where the token names its target), and otherwise only by
// its length, since it may be a credential.
func Describe(token []byte) string {
	if a, err := address.Parse(string(token)); err == nil {
		return a.String()
	}
	return fmt.Sprintf("(%d bytes, not an address)", len(token))
}
