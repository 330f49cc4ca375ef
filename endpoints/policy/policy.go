// Package policy is the server's answer to "may a token name this target?".
//
// A Policy is safe without configuration: it never dials this host's own
// services (loopback, its interface addresses), link-local addresses and
// cloud metadata, this-network, multicast or broadcast addresses, or UNIX
// sockets, unless the server listens on loopback only (a local setup, where
// loopback and UNIX sockets are fine) or a rule names them; without client
// authentication it dials only private ranges, so an open relay to the
// internet does not exist. Allow rules replace those defaults (special ranges
// still need naming), deny rules refuse whatever they match, and the
// addresses the server itself listens on (its REST API) are never a target.
//
// Host names, in rules and in targets, are resolved when a tunnel asks; every
// address a target resolves to must pass, and the tunnel dials the very IP
// that was checked, so a DNS answer cannot change between check and dial.
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

// Setup is what the defaults depend on: how the server runs.
type Setup struct {
	// Listen is the UDP address the server is bound to. A loopback address
	// makes a local setup, where only this host's users can reach the server.
	Listen net.Addr
	// Listening are the other addresses (HOST:PORT) this process listens on,
	// its REST API: never a target. An empty or unspecified host means every
	// address of this host.
	Listening []string
	// Authenticated says that every client proves who it is before a tunnel
	// (a shared secret, mutual TLS, identities).
	Authenticated bool
}

// Policy decides on targets. It is immutable once made: With makes a layered
// copy, and Check may be called from any goroutine.
type Policy struct {
	local, authenticated bool
	listeners            []listener
	rules                *Rules
	host                 *hostAddrs
	resolver             *net.Resolver
}

// New is the server's effective policy: the defaults of setup under rules.
func New(setup Setup, rules *Rules) (*Policy, error) {
	p := &Policy{authenticated: setup.Authenticated, rules: rules, host: &hostAddrs{}, resolver: net.DefaultResolver}
	listening := setup.Listening
	if setup.Listen != nil {
		listening = append([]string{setup.Listen.String()}, listening...)
		if ap, err := netip.ParseAddrPort(setup.Listen.String()); err == nil {
			p.local = ap.Addr().Unmap().IsLoopback()
		}
	}
	for _, s := range listening {
		ls, err := parseListener(context.Background(), p.resolver, s)
		if err != nil {
			return nil, err
		}
		p.listeners = append(p.listeners, ls...)
	}
	return p, nil
}

// With is p with an identity's rules layered over the server's: the
// identity's allow rules, when it has any, replace the server's allow rules
// (or the defaults); its deny rules add to the server's. What no rule can
// allow (the server's own listeners, unspecified addresses) and the need to
// name a special range stay. With(nil) is p.
func (p *Policy) With(identity *Rules) *Policy {
	if identity == nil {
		return p
	}
	q := *p
	q.rules = p.rules.layer(identity)
	return &q
}

// Check decides on a target. It returns the address to dial: for TCP the
// checked IP and port, for UNIX the cleaned path; for UDP as for TCP. A refusal wraps
// ErrForbidden and says why, for the server's log.
func (p *Policy) Check(ctx context.Context, target address.Address) (address.Address, error) {
	if p == nil {
		return address.Address{}, fmt.Errorf("%w: %s: no policy", ErrForbidden, target)
	}
	var (
		dial address.Address
		err  error
	)
	switch target.Network {
	case address.TCP, address.UDP:
		// Rules name hosts and ports, not protocols: a UDP flow to a port is
		// decided as a TCP tunnel to it is.
		dial, err = p.checkHostPort(ctx, target.Network, target.Addr)
	case address.Unix:
		dial, err = p.checkUnix(target.Addr)
	default:
		err = fmt.Errorf("unknown network %q", target.Network)
	}
	if err != nil {
		return address.Address{}, fmt.Errorf("%w: %s: %v", ErrForbidden, target, err)
	}
	return dial, nil
}

// refusal is a reason that refuses a whole target, whatever its other
// addresses: a resolved address that is special, denied or the server's own.
type refusal struct{ error }

func (p *Policy) checkHostPort(ctx context.Context, network, hostport string) (address.Address, error) {
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		return address.Address{}, err
	}
	port64, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port64 == 0 {
		return address.Address{}, fmt.Errorf("bad port %q", portText)
	}
	port := uint16(port64)
	ips, err := lookup(ctx, p.resolver, host)
	if err != nil {
		return address.Address{}, err
	}
	if len(ips) == 0 {
		return address.Address{}, fmt.Errorf("%s resolves to no address", host)
	}
	var (
		chosen netip.Addr
		why    error
	)
	for _, ip := range ips {
		err := p.decide(ctx, ip, port)
		var r refusal
		switch {
		case errors.As(err, &r):
			return address.Address{}, fmt.Errorf("%s: %v", ip, r.error)
		case err != nil:
			why = fmt.Errorf("%s: %w", ip, err)
		case !chosen.IsValid():
			chosen = ip
		}
	}
	if !chosen.IsValid() {
		return address.Address{}, why
	}
	return address.Address{Network: network, Addr: netip.AddrPortFrom(chosen, port).String()}, nil
}

// decide is the verdict on one address: nil to allow, a refusal, or another
// error when merely nothing allows it.
func (p *Policy) decide(ctx context.Context, ip netip.Addr, port uint16) error {
	ip = ip.WithZone("") // a zone does not change what an address is
	if ip.IsUnspecified() {
		return refusal{errors.New("the unspecified address dials this host; name 127.0.0.1 or ::1 instead")}
	}
	for _, l := range p.listeners {
		if l.port != port {
			continue
		}
		if l.ip == ip {
			return refusal{fmt.Errorf("this server listens there (%s)", l.text)}
		}
		if !l.ip.IsValid() {
			own, err := p.thisHost(ip)
			if err != nil {
				return refusal{err}
			}
			if own {
				return refusal{fmt.Errorf("this server listens there (%s, every address of this host)", l.text)}
			}
		}
	}
	for _, r := range p.rules.denyRules() {
		if r.isUnix() || port < r.lo || port > r.hi {
			continue
		}
		ok, err := p.matches(ctx, r, ip)
		if err != nil {
			return refusal{fmt.Errorf("deny rule %q cannot be checked: %v", r.text, err)}
		}
		if ok {
			return refusal{fmt.Errorf("denied by rule %q", r.text)}
		}
	}
	rg := classify(ip)
	if p.local && ip.IsLoopback() {
		rg.kind = private // a local setup's loopback is as the internal network
	}
	own := false // loopback is a kind of its own, whatever interface holds it
	if !p.local && rg.kind != loopback {
		var err error
		if own, err = p.host.has(ip); err != nil {
			return refusal{err}
		}
	}
	special := rg.kind.special() || own
	allow := p.rules.allowRules()
	if len(allow) == 0 {
		switch {
		case special:
			return refusal{fmt.Errorf("%s, refused by default; an --allow rule must name it", describe(rg, own))}
		case !p.authenticated && rg.kind != private:
			return errors.New("a public address: without client authentication only private ranges are allowed")
		}
		return nil
	}
	for _, r := range allow {
		if r.isUnix() || port < r.lo || port > r.hi {
			continue
		}
		if ok, err := p.matches(ctx, r, ip); err == nil && ok && (!special || r.names(rg, own)) {
			return nil
		}
	}
	if special {
		return refusal{fmt.Errorf("%s, which no allow rule names", describe(rg, own))}
	}
	return errors.New("matches no allow rule")
}

// thisHost says whether ip reaches this host: loopback, or one of its
// interface addresses.
func (p *Policy) thisHost(ip netip.Addr) (bool, error) {
	if ip.IsLoopback() {
		return true, nil
	}
	return p.host.has(ip)
}

func describe(rg addrRange, own bool) string {
	if own {
		return "an address of this host"
	}
	s := rg.kind.String()
	if rg.note != "" {
		s += " (" + rg.note + ")"
	}
	return s
}

func (p *Policy) matches(ctx context.Context, r rule, ip netip.Addr) (bool, error) {
	if r.host == "" {
		return r.prefix.Contains(ip), nil
	}
	ips, err := lookup(ctx, p.resolver, r.host)
	if err != nil {
		return false, err
	}
	for _, a := range ips {
		if a.WithZone("") == ip {
			return true, nil
		}
	}
	return false, nil
}

func (p *Policy) checkUnix(path string) (address.Address, error) {
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		path = filepath.Clean(path)
	}
	if !address.UnixTargetsSupported && !abstract {
		return address.Address{}, errors.New("UNIX socket targets are supported on Linux and Windows only")
	}
	for _, r := range p.rules.denyRules() {
		if r.isUnix() && r.coversPath(path) {
			return address.Address{}, fmt.Errorf("denied by rule %q", r.text)
		}
	}
	allow := p.rules.allowRules()
	if len(allow) == 0 {
		if !p.local {
			return address.Address{}, errors.New("UNIX sockets are refused by default while the server listens beyond loopback; an --allow unix: rule must name it")
		}
		return address.Address{Network: address.Unix, Addr: path}, nil
	}
	for _, r := range allow {
		if r.isUnix() && r.coversPath(path) {
			return address.Address{Network: address.Unix, Addr: path}, nil
		}
	}
	return address.Address{}, errors.New("matches no allow rule")
}

// String says in one line what the policy allows, for the start-up log.
func (p *Policy) String() string {
	if p == nil {
		return "nothing (no policy)"
	}
	refused := "link-local, cloud metadata, this-network (0.0.0.0/8, ::/96), multicast and broadcast addresses"
	if !p.local {
		refused = "loopback, this host's addresses, " + refused + ", UNIX sockets"
	}
	var b strings.Builder
	allow := p.rules.allowRules()
	switch {
	case len(allow) > 0:
		fmt.Fprintf(&b, "only --allow %s; %s only where a rule names them", texts(allow), refused)
	case p.local && p.authenticated:
		fmt.Fprintf(&b, "any address, loopback and UNIX sockets included (local setup: the server listens on loopback only); refused: %s", refused)
	case p.local:
		fmt.Fprintf(&b, "loopback, private ranges and UNIX sockets (local setup: the server listens on loopback only; no client authentication: no public addresses); refused: %s", refused)
	case p.authenticated:
		fmt.Fprintf(&b, "any address; refused: %s", refused)
	default:
		fmt.Fprintf(&b, "private ranges only (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7; no client authentication); refused: %s", refused)
	}
	if deny := p.rules.denyRules(); len(deny) > 0 {
		fmt.Fprintf(&b, "; --deny %s", texts(deny))
	}
	if len(p.listeners) > 0 {
		seen := map[string]bool{}
		var ls []string
		for _, l := range p.listeners {
			if !seen[l.text] {
				seen[l.text] = true
				ls = append(ls, l.text)
			}
		}
		fmt.Fprintf(&b, "; never the server's own listeners %s", strings.Join(ls, " "))
	}
	return b.String()
}
