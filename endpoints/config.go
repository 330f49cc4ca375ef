package endpoints

import (
	"fmt"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/engine"
)

// validateSecret refuses a secret that no header could carry: every tunnel
// would fail.
func validateSecret(secret []byte) error {
	if len(secret) > preamble.MaxSecretLen {
		return fmt.Errorf("shared secret of %d bytes exceeds the wire format's limit of %d", len(secret), preamble.MaxSecretLen)
	}
	return nil
}

// checkIdleTimeout refuses a negative idle timeout, which the engine would
// take as none.
func checkIdleTimeout(c engine.Config) error {
	if c.IdleTimeout < 0 {
		return fmt.Errorf("Engine.IdleTimeout is negative (%v); 0 means never", c.IdleTimeout)
	}
	return nil
}

// orDefault sets a zero *v to def; a negative one is an error naming field,
// rather than a default the caller did not ask for.
func orDefault[T int | time.Duration](field string, v *T, def T) error {
	switch {
	case *v < 0:
		return fmt.Errorf("%s is negative (%v); 0 means the default, %v", field, *v, def)
	case *v == 0:
		*v = def
	}
	return nil
}
