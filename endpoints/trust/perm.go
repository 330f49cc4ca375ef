package trust

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
)

// As ssh does, a private key that other users can read, or a known-hosts
// file (or its directory) that other users can write, is pointed out: the
// first gives away the endpoint's identity, the second lets another user
// record a server of their own as trusted. A warning, not a refusal, because
// group access is sometimes meant (a service group that reads the key);
// Windows has no such mode bits and is not checked.

const (
	keyLoose        fs.FileMode = 0o077 // any access by group or others
	knownHostsLoose fs.FileMode = 0o022 // write access by group or others
)

// warnLoose warns when path, which the option names, grants what mask
// covers to group or others, or belongs to another user than this one and
// root. A missing file is not this check's business.
func warnLoose(log *slog.Logger, option, path string, mask fs.FileMode, why, fix string) {
	if runtime.GOOS == "windows" || path == "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if perm := fi.Mode().Perm(); perm&mask != 0 {
		log.Warn("UNPROTECTED "+option+": "+why+"; "+fix,
			"file", path, "mode", perm.String())
	}
	if uid, ok := fileOwner(fi); ok && uid != os.Getuid() && uid != 0 {
		log.Warn("UNPROTECTED "+option+": the file belongs to another user, who can change it", "file", path, "owner", uid)
	}
}

// warnLooseKey checks a private key file; option names where it came from.
func warnLooseKey(log *slog.Logger, option, path string) {
	warnLoose(log, option, path, keyLoose, "other users can read the private key and pose as this endpoint", "chmod 600 it")
}

// warnLooseKnownHosts checks the known-hosts file and the directory it is
// in: whoever may write there can put another file in its place.
func warnLooseKnownHosts(log *slog.Logger, path string) {
	warnLoose(log, "known-hosts", path, knownHostsLoose, "other users can write it and make the client trust their server", "chmod go-w it")
	if runtime.GOOS == "windows" {
		return
	}
	dir := filepath.Dir(path)
	// A sticky directory (/tmp) lets no one replace another's file.
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&knownHostsLoose != 0 && fi.Mode()&fs.ModeSticky == 0 {
		log.Warn("UNPROTECTED known-hosts: other users can write its directory and replace the file",
			"dir", dir, "mode", fi.Mode().Perm().String())
	}
}
