package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret is the shared-secret flags of both commands.
type Secret struct {
	Secret     string `help:"Shared secret that every tunnel must present (compared in constant time, inside TLS). Prefer --secret-file or the environment: a flag shows in ps." env:"QUICTUN_SECRET" placeholder:"SECRET"`
	SecretFile string `help:"File holding the shared secret (its first line)." type:"path" placeholder:"FILE"`
}

// Load returns the secret, from the flag or the file, or nil when none is set.
func (s Secret) Load(log *slog.Logger) ([]byte, error) {
	if s.Secret != "" && s.SecretFile != "" {
		return nil, errors.New("--secret and --secret-file: give one")
	}
	if s.SecretFile == "" {
		if s.Secret == "" {
			return nil, nil
		}
		return []byte(s.Secret), nil
	}
	fi, err := os.Stat(s.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("secret file is readable by other users; chmod 600 it", "file", s.SecretFile, "mode", fi.Mode().Perm().String())
	}
	b, err := os.ReadFile(s.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return nil, fmt.Errorf("secret file %s: first line is empty", s.SecretFile)
	}
	return []byte(line), nil
}
