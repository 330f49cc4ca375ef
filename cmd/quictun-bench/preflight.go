//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
)

// tool is a program the harness itself runs, and the Debian package that has it.
type tool struct{ program, pkg, why string }

// missingTools lists the programs the selected scenarios need and this machine lacks,
// so that a run fails before it builds, sets up or measures anything. Contenders are
// not tools: one that is missing is skipped with a note (see checkContenders).
func missingTools(selected []bench.Suite, only []string, backend, quictunBin string, probe bool) []tool {
	var need []tool
	if backend != "loopback" {
		need = append(need, tool{"ip", "iproute2", "network namespaces of the emulated link"})
	}
	iperf := probe && backend != "loopback"
	var wireguard bool
	for _, s := range selected {
		for _, sc := range s.Scenarios {
			iperf = iperf || sc.Kind == bench.Goodput || sc.Kind == bench.Fairness || sc.Kind == bench.UDP || sc.Kind == bench.WireGuard
			wireguard = wireguard || sc.Kind == bench.WireGuard
		}
	}
	if wireguard {
		need = append(need, tool{"wireguard-go", "wireguard-go", "WireGuard on both hosts of wireguard scenarios"},
			tool{"wg", "wireguard-tools", "configuring WireGuard in wireguard scenarios"})
	}
	quictun := slices.ContainsFunc(contenders(selected, only), isQuictun)
	if iperf {
		need = append(need, tool{"iperf3", "iperf3", "the bulk flows of goodput and fairness scenarios"})
	}
	if quictun && quictunBin == "" {
		need = append(need, tool{"go", "", "building quictun-server and quictun-client (or pass --quictun-bin)"})
	}
	var missing []tool
	for _, t := range need {
		if _, err := exec.LookPath(t.program); err != nil {
			missing = append(missing, t)
		}
	}
	return missing
}

func isQuictun(name string) bool { return strings.HasPrefix(name, bench.Quictun) }

// missingError names every missing tool, why it is needed and how to get it.
func missingError(missing []tool) error {
	var b strings.Builder
	var pkgs []string
	for _, t := range missing {
		fmt.Fprintf(&b, "\n  %s: needed for %s", t.program, t.why)
		if t.pkg != "" && !slices.Contains(pkgs, t.pkg) {
			pkgs = append(pkgs, t.pkg)
		}
	}
	hint := ""
	if len(pkgs) > 0 {
		hint = fmt.Sprintf("\ninstall with: apt-get install %s (task bench does this when run as root)", strings.Join(pkgs, " "))
	}
	return exitCode{code: 2, err: fmt.Errorf("missing before any run started:%s%s", b.String(), hint)}
}

// checkContenders resolves every contender the run would start, prints the ones that
// cannot run here, and refuses the run when one was asked for by name (--contenders)
// or when none of the selection can run: such a run would measure nothing.
func checkContenders(selected []bench.Suite, only []string, cfg contender.Config) error {
	names := contenders(selected, only)
	var runnable int
	var refused []error
	for _, n := range names {
		_, err := contender.New(n, cfg)
		switch {
		case err == nil:
			runnable++
		case errors.Is(err, contender.ErrUnavailable) && !slices.Contains(only, n):
			fmt.Fprintf(os.Stderr, "bench: skipping %v\n", err)
		default:
			refused = append(refused, err)
		}
	}
	if len(refused) > 0 {
		return exitCode{code: 2, err: fmt.Errorf("contenders asked for by --contenders cannot run: %w", errors.Join(refused...))}
	}
	if runnable == 0 && len(names) > 0 {
		return exitCode{code: 2, err: fmt.Errorf("none of the contenders %s can run here", strings.Join(names, ", "))}
	}
	return nil
}

// contenders lists, once each, the contenders the selected scenarios name, restricted
// to only when it is not empty.
func contenders(selected []bench.Suite, only []string) []string {
	var names []string
	for _, s := range selected {
		for _, sc := range s.Scenarios {
			for _, n := range sc.Contenders {
				if (len(only) == 0 || slices.Contains(only, n)) && !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
		}
	}
	return names
}
