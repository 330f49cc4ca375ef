package cli

import (
	"os"
	"path/filepath"
)

// StateDir is where quictun keeps what must survive a restart (the server's
// generated key pair, the client's known hosts): $XDG_CONFIG_HOME/quictun or
// the platform's equivalent, else ./.quictun.
func StateDir() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "quictun")
	}
	return ".quictun"
}
