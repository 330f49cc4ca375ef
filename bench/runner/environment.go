//go:build linux

package runner

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/quictun/quictun/bench"
)

// Environment describes this machine and the tools of the run, for the report.
func Environment(cfg Config, res *Result, started, finished time.Time) bench.Environment {
	env := bench.Environment{
		Started:       started,
		Finished:      finished,
		Command:       strings.Join(os.Args, " "), // the CLI puts what the user typed here
		Kernel:        readTrimmed("/proc/sys/kernel/osrelease"),
		CPU:           cpuModel(),
		Cores:         runtime.NumCPU(),
		Backend:       res.Backend,
		BackendReason: res.BackendReason,
		HostCC:        readTrimmed("/proc/sys/net/ipv4/tcp_congestion_control"),
		Versions:      map[string]string{"go": runtime.Version()},
		Tuning:        res.Tuning,
		Notes:         res.Notes,
		SuiteTitles:   map[string]string{},
		Incomplete:    res.Incomplete,
		Emulator:      res.Emulator,
	}
	for _, s := range cfg.Suites {
		env.SuiteTitles[s.Name] = s.Description
	}
	if v := moduleVersion(cfg.Contender.QuictunServer, "github.com/quic-go/quic-go"); v != "" {
		env.Versions["quic-go"] = v
	}
	if v := firstLine("iperf3", "--version"); v != "" {
		env.Versions["iperf3"] = v
	}
	if v := firstLine("dpkg-query", "-W", "-f=${Version}", "kcptun"); v != "" {
		env.Versions["kcptun"] = v
	}
	return env
}

// moduleVersion reads the version of a dependency compiled into binary.
func moduleVersion(binary, module string) string {
	if binary == "" {
		return ""
	}
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return ""
	}
	for _, d := range info.Deps {
		if d.Path == module {
			if d.Replace != nil {
				return d.Replace.Version + " (replaced)"
			}
			return d.Version
		}
	}
	return ""
}

func firstLine(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
