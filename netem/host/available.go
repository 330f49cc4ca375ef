//go:build linux

package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var availability struct {
	once     sync.Once
	backends []string
	why      error
}

// Available reports which backends work here, in the order "auto" prefers them, and
// why the others do not (nil when all work). The answer is probed once per process:
// root, the ip tool, a TUN device, and netem on a throwaway veth pair in a throwaway
// namespace (named qtprobeNNNN; CleanupStale("qtprobe") removes a leftover).
func Available() (backends []string, why error) {
	availability.once.Do(func() {
		availability.backends, availability.why = probe()
	})
	return availability.backends, availability.why
}

func probe() ([]string, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("host link emulation needs root (network namespaces, TUN devices)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("the ip tool (iproute2) is missing: %w", err)
	}
	// In the order auto prefers them: tc netem runs in the kernel, costs no user-space
	// CPU and is what a real Linux host offers; the TUN forwarder is the fallback for
	// kernels without sch_netem (this project's own machines).
	var backends []string
	var whyNot []error
	for _, b := range []struct {
		name  string
		probe func() error
	}{{BackendTCNetem, probeNetem}, {BackendTUN, probeTUN}} {
		if err := b.probe(); err != nil {
			whyNot = append(whyNot, fmt.Errorf("%s: %w", b.name, err))
		} else {
			backends = append(backends, b.name)
		}
	}
	return backends, errors.Join(whyNot...)
}

func probeName() string { return "qtprobe" + strconv.Itoa(os.Getpid()%1000) }

func probeTUN() error {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("no /dev/net/tun: %w", err)
	}
	fd, err := openTUN(probeName() + "-t")
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func probeNetem() error {
	if _, err := exec.LookPath("tc"); err != nil {
		return fmt.Errorf("the tc tool is missing: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns := probeName() + "-cli"
	if namespaceExists(ns) {
		_ = deleteNamespace(ctx, ns)
	}
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	defer deleteNamespace(ctx, ns)
	if err := run(ctx, "ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"); err != nil {
		return err
	}
	if err := run(ctx, "tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"); err != nil {
		return fmt.Errorf("kernel has no usable netem qdisc: %w", err)
	}
	return nil
}

// CleanupStale removes what testbeds named prefix... left behind: namespaces named
// PREFIX*-cli / PREFIX*-srv (killing processes in them) and devices PREFIX*-c /
// PREFIX*-s still in this namespace. Call it at start with the prefix your testbeds'
// names begin with; never while another testbed with such a name is alive.
func CleanupStale(prefix string) error {
	if err := checkName("cleanup prefix", prefix); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list namespaces: %w", err)
	}
	for _, e := range entries {
		if ours(e.Name(), prefix, "-cli", "-srv") {
			errs = append(errs, deleteNamespace(ctx, e.Name()))
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list devices: %w", err))...)
	}
	for _, ifc := range ifaces {
		if ours(ifc.Name, prefix, "-c", "-s", "-t") {
			errs = append(errs, run(ctx, "ip", "link", "del", ifc.Name))
		}
	}
	return errors.Join(errs...)
}

// ours reports whether name is NAME+suffix for a testbed NAME that starts with prefix
// and is itself a valid testbed name.
func ours(name, prefix string, suffixes ...string) bool {
	for _, s := range suffixes {
		base, ok := strings.CutSuffix(name, s)
		if ok && strings.HasPrefix(base, prefix) && namePattern.MatchString(base) {
			return true
		}
	}
	return false
}

func linkExists(dev string) bool {
	_, err := net.InterfaceByName(dev)
	return err == nil
}
