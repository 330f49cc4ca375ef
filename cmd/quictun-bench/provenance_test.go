//go:build linux

package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		via  string
		want string
	}{
		{[]string{"/tmp/go-build1278831165/b001/exe/quictun-bench", "--suite", "quick", "--out", "bench/results"}, "",
			"go run ./cmd/quictun-bench --suite quick --out bench/results"},
		{[]string{"/tmp/go-build1278831165/b001/exe/quictun-bench", "--suite", "all", "--out", "bench/results"}, "task bench",
			"task bench (go run ./cmd/quictun-bench --suite all --out bench/results)"},
		{[]string{"/root/.cache/go-build/01/01b593cb584123d6109d3b4f8cd295e777809c9c0777ee4cda2a6b6754958202-d/quictun-bench", "--suite", "quick"}, "",
			"go run ./cmd/quictun-bench --suite quick"},
		{[]string{"/usr/local/bin/quictun-bench", "--scenarios", "my suite.toml", "--suite=x"}, "",
			"quictun-bench --scenarios 'my suite.toml' --suite=x"},
		{[]string{"./bin/quictun-bench", "--contenders", "it's"}, "", `quictun-bench --contenders 'it'\''s'`},
		{[]string{"/home/u/exe/quictun-bench"}, "", "quictun-bench"},
		{nil, "task bench", "task bench"},
	} {
		if got := commandLine(c.args, c.via); got != c.want {
			t.Errorf("commandLine(%q, %q) = %q, want %q", c.args, c.via, got, c.want)
		}
	}
}

func TestQuictunVersionIsTheTreesCommit(t *testing.T) {
	want, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		t.Skipf("not in a git tree (or no git): %v", err)
	}
	if got := quictunVersion(context.Background(), "", ""); got != strings.TrimSpace(string(want)) {
		t.Errorf("quictunVersion = %q, want %q", got, want)
	}
	// Prebuilt binaries without a VCS stamp: say so rather than describe this tree.
	if got := quictunVersion(context.Background(), "/opt/qt", "/nonexistent/quictun-server"); !strings.Contains(got, "/opt/qt") {
		t.Errorf("prebuilt without stamp: %q", got)
	}
}
