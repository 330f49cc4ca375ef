package policy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// hostAddrs are the addresses of this host's interfaces. A service bound to
// 0.0.0.0 answers on each of them as it does on loopback, so they are this
// host's own; they are read again at most once a second, since DHCP and
// hotplug change them while the server runs.
type hostAddrs struct {
	mu    sync.Mutex
	read  time.Time
	addrs map[netip.Addr]bool
	err   error
}

const hostAddrsMaxAge = time.Second

// has says whether ip (unmapped, no zone) is one of this host's addresses.
func (h *hostAddrs) has(ip netip.Addr) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); h.addrs == nil || now.Sub(h.read) > hostAddrsMaxAge {
		h.read = now
		h.addrs, h.err = readAddrs()
	}
	if h.err != nil {
		return false, fmt.Errorf("this host's addresses: %w", h.err)
	}
	return h.addrs[ip], nil
}

func readAddrs() (map[netip.Addr]bool, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return map[netip.Addr]bool{}, err
	}
	m := make(map[netip.Addr]bool, len(as))
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				m[ip.Unmap()] = true
			}
		}
	}
	return m, nil
}

// listener is an address this server listens on: no target may name it,
// whatever the rules say (a tunnel to the server's own REST API could list
// and close tunnels). An unspecified ip stands for every address of this
// host.
type listener struct {
	ip   netip.Addr // invalid: every address of this host
	port uint16
	text string
}

// parseListener reads "HOST:PORT" as a listener (or several, for a host name
// with several addresses). A port of 0 is not known until the listener binds,
// so it denies nothing.
func parseListener(ctx context.Context, resolver *net.Resolver, s string) ([]listener, error) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: bad port", s)
	}
	if port == 0 {
		return nil, nil
	}
	if host == "" {
		return []listener{{port: uint16(port), text: s}}, nil
	}
	ips, err := lookup(ctx, resolver, host)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", s, err)
	}
	var ls []listener
	for _, ip := range ips {
		l := listener{ip: ip.WithZone(""), port: uint16(port), text: s}
		if l.ip.IsUnspecified() {
			l.ip = netip.Addr{}
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// lookup resolves host, or reads it as an IP literal, into unmapped addresses.
func lookup(ctx context.Context, resolver *net.Resolver, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}
