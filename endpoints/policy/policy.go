// Package policy is the server's answer to "may a token name this target?":
// a list of allow rules, deny by default once any rule is set. Host names, in
// rules and in targets, are resolved when a tunnel asks, and the tunnel then
// dials the very IP that was checked, so a DNS answer cannot change between
// the check and the dial.
package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quictun/quictun/endpoints/address"
)

// ErrForbidden wraps every refusal, so the server can answer CodeForbidden.
var ErrForbidden = errors.New("forbidden target")

// Policy is a set of allow rules. The nil *Policy allows everything.
type Policy struct {
	rules    []rule
	resolver *net.Resolver
}

type rule struct {
	text string
	// For TCP rules: a prefix or a host name to resolve, and a port range.
	prefix netip.Prefix
	host   string
	lo, hi uint16
	// For UNIX rules: an exact path, or a directory whose sockets are all allowed.
	unix string
	dir  bool
}

// Parse reads rules like "10.0.0.0/8:22", "127.0.0.1:5000-5100",
// "[2001:db8::/32]:*", "db.internal:5432", "unix:/run/app.sock" and
// "unix:/run/apps/*". No rules returns nil: everything is allowed.
func Parse(specs []string) (*Policy, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	p := &Policy{resolver: net.DefaultResolver}
	for _, s := range specs {
		r, err := parseRule(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("allow rule %q: %w", s, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func parseRule(s string) (rule, error) {
	r := rule{text: s}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if dir, ok := strings.CutSuffix(path, "/*"); ok {
			r.dir, path = true, dir
		}
		if !filepath.IsAbs(path) {
			return rule{}, errors.New("a UNIX socket rule needs an absolute path")
		}
		r.unix = filepath.Clean(path)
		return r, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return rule{}, errors.New("want HOST-OR-CIDR:PORTS or unix:PATH")
	}
	hostPart, ports := s[:i], s[i+1:]
	lo, hi, err := parsePorts(ports)
	if err != nil {
		return rule{}, err
	}
	r.lo, r.hi = lo, hi
	hostPart = strings.TrimSuffix(strings.TrimPrefix(hostPart, "["), "]")
	switch {
	case hostPart == "":
		return rule{}, errors.New("missing host or CIDR")
	case strings.Contains(hostPart, "/"):
		pfx, err := netip.ParsePrefix(hostPart)
		if err != nil {
			return rule{}, err
		}
		r.prefix = pfx.Masked()
	default:
		if a, err := netip.ParseAddr(hostPart); err == nil {
			a = a.Unmap()
			r.prefix = netip.PrefixFrom(a, a.BitLen())
		} else if strings.ContainsAny(hostPart, " /\\\x00") {
			return rule{}, fmt.Errorf("bad host %q", hostPart)
		} else {
			r.host = hostPart
		}
	}
	return r, nil
}

func parsePorts(s string) (lo, hi uint16, err error) {
	if s == "*" {
		return 1, 65535, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	l, err := strconv.ParseUint(a, 10, 16)
	if err != nil || l == 0 {
		return 0, 0, fmt.Errorf("bad port %q", a)
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(b, 10, 16); err != nil || h < l {
			return 0, 0, fmt.Errorf("bad port range %q", s)
		}
	}
	return uint16(l), uint16(h), nil
}

// Check decides on a target. It returns the address to dial: for TCP the
// checked IP and port, for UNIX the cleaned path. A refusal wraps ErrForbidden.
func (p *Policy) Check(ctx context.Context, target address.Address) (address.Address, error) {
	if p == nil {
		return target, nil
	}
	if target.Network == address.Unix {
		path := filepath.Clean(target.Addr)
		for _, r := range p.rules {
			if r.unix == "" {
				continue
			}
			if !r.dir && path == r.unix || r.dir && filepath.Dir(path) == r.unix {
				return address.Address{Network: address.Unix, Addr: path}, nil
			}
		}
		return address.Address{}, fmt.Errorf("%w: %s matches no allow rule", ErrForbidden, target)
	}
	host, portText, err := net.SplitHostPort(target.Addr)
	if err != nil {
		return address.Address{}, fmt.Errorf("%w: %s: %v", ErrForbidden, target, err)
	}
	port64, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return address.Address{}, fmt.Errorf("%w: %s: bad port", ErrForbidden, target)
	}
	port := uint16(port64)
	ips, err := p.lookup(ctx, host)
	if err != nil {
		return address.Address{}, fmt.Errorf("%w: %s: %v", ErrForbidden, target, err)
	}
	for _, ip := range ips {
		for _, r := range p.rules {
			if r.unix != "" || port < r.lo || port > r.hi {
				continue
			}
			if ok, err := p.matches(ctx, r, ip); err == nil && ok {
				return address.Address{Network: address.TCP, Addr: netip.AddrPortFrom(ip, port).String()}, nil
			}
		}
	}
	return address.Address{}, fmt.Errorf("%w: %s (%v) matches no allow rule", ErrForbidden, target, ips)
}

func (p *Policy) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := p.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

func (p *Policy) matches(ctx context.Context, r rule, ip netip.Addr) (bool, error) {
	if r.host == "" {
		return r.prefix.Contains(ip), nil
	}
	ips, err := p.lookup(ctx, r.host)
	if err != nil {
		return false, err
	}
	for _, a := range ips {
		if a == ip {
			return true, nil
		}
	}
	return false, nil
}

// String lists the rules, for the start-up log.
func (p *Policy) String() string {
	if p == nil {
		return "allow all"
	}
	var ts []string
	for _, r := range p.rules {
		ts = append(ts, r.text)
	}
	return strings.Join(ts, " ")
}
