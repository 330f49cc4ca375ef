//go:build linux

package main

import (
	"context"
	"debug/buildinfo"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// viaEnv is set by the Taskfile to the task that ran this command ("task bench"), so the
// report shows what the user typed rather than go run's temporary binary.
const viaEnv = "QUICTUN_BENCH_VIA"

// commandLine is the command the user typed, readable: `go run ./cmd/quictun-bench
// --suite quick` instead of go run's /tmp/go-build.../exe/quictun-bench, and prefixed
// with the task when run through one: `task bench:quick (go run ./cmd/quictun-bench ...)`.
func commandLine(args []string, via string) string {
	if len(args) == 0 {
		return via
	}
	prog := filepath.Base(args[0])
	if isGoRunBinary(args[0]) {
		prog = "go run ./cmd/" + prog
	}
	parts := []string{prog}
	for _, a := range args[1:] {
		parts = append(parts, shellQuote(a))
	}
	cmd := strings.Join(parts, " ")
	if via = strings.TrimSpace(via); via != "" {
		return via + " (" + cmd + ")"
	}
	return cmd
}

// isGoRunBinary reports whether path is where `go run` puts its binary: a temporary
// $GOTMPDIR/go-buildNNN/b001/exe/NAME, or (Go 1.24 on) the copy it keeps in the build
// cache, $GOCACHE/XX/<64 hex digits>-d/NAME.
func isGoRunBinary(path string) bool {
	dir := filepath.Dir(path)
	if filepath.Base(dir) == "exe" && strings.HasPrefix(filepath.Base(filepath.Dir(filepath.Dir(dir))), "go-build") {
		return true
	}
	return cacheEntry.MatchString(filepath.Base(dir)) && len(filepath.Base(filepath.Dir(dir))) == 2
}

var cacheEntry = regexp.MustCompile(`^[0-9a-f]{64}-d$`)

// shellQuote leaves plain words alone and single-quotes the rest.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quictunVersion says which quictun was measured: `git describe --always --dirty` of
// the source tree the binaries were built from (this module, the working directory),
// or, for binaries given with --quictun-bin, the VCS revision stamped into them.
func quictunVersion(ctx context.Context, prebuilt, server string) string {
	if prebuilt == "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
	}
	if v := stampedRevision(server); v != "" {
		return v
	}
	if prebuilt != "" {
		return "unknown (binaries from " + prebuilt + ", no VCS stamp)"
	}
	return "unknown (no git)"
}

// stampedRevision reads vcs.revision (and vcs.modified) from a Go binary's build info.
func stampedRevision(binary string) string {
	if binary == "" {
		return ""
	}
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return ""
	}
	var rev string
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
