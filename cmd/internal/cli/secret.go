package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/trust"
)

// Secret is the shared-secret flags of both commands.
type Secret struct {
	Secret     string `help:"Shared secret that every client must prove, once per session, without sending it (an HMAC bound to the TLS session). Prefer --secret-file or the environment: a flag shows in ps." env:"QUICTUN_SECRET" placeholder:"SECRET" sensitive:""`
	SecretFile string `help:"File holding the shared secret (its first line)." type:"path" placeholder:"FILE"`
}

// Load returns the secret, from the flag or the file, or nil when none is set.
// An error in either is a *trust.OptionError, so that Config.Locate can say
// where the value came from.
func (s Secret) Load(log *slog.Logger) ([]byte, error) {
	if s.Secret != "" && s.SecretFile != "" {
		return nil, &trust.OptionError{Option: "secret-file", Err: errors.New("given together with --secret (or QUICTUN_SECRET): give one")}
	}
	if s.SecretFile == "" {
		if s.Secret == "" {
			return nil, nil
		}
		if len(s.Secret) > preamble.MaxSecretLen {
			return nil, &trust.OptionError{Option: "secret", Err: fmt.Errorf("longer than %d bytes", preamble.MaxSecretLen)}
		}
		return []byte(s.Secret), nil
	}
	fail := func(err error) ([]byte, error) { return nil, &trust.OptionError{Option: "secret-file", Err: err} }
	fi, err := os.Stat(s.SecretFile)
	if err != nil {
		return fail(err)
	}
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("%s is not a regular file", s.SecretFile))
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("secret file is readable by other users; chmod 600 it", "file", s.SecretFile, "mode", fi.Mode().Perm().String())
	}
	f, err := os.Open(s.SecretFile)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	// The secret is one line; a secret file far larger is a mistaken path.
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return fail(err)
	}
	if len(b) > maxSecretFile {
		return fail(fmt.Errorf("%s is larger than %d bytes: not a secret file", s.SecretFile, maxSecretFile))
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return fail(fmt.Errorf("%s: first line is empty", s.SecretFile))
	}
	if len(line) > preamble.MaxSecretLen {
		return fail(fmt.Errorf("%s: the secret is longer than %d bytes", s.SecretFile, preamble.MaxSecretLen))
	}
	return []byte(line), nil
}

// maxSecretFile bounds what Load reads of a secret file.
const maxSecretFile = 64 << 10
