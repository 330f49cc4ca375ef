package endpoints

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// A client address that fails to authenticate waits before its next session:
// minPenalty after the first failure, doubling with each further one up to
// maxPenalty. A guesser pays in time, not the server in work; an address
// forgets its failures once it authenticates, or maxPenalty after the last.
const (
	minPenalty      = time.Second
	maxPenalty      = 5 * time.Minute
	maxPenaltyTable = 4096
)

// penalties are the addresses serving a penalty. They are keyed by
// clientKey, so that one IPv6 host cannot step around its penalty by
// changing the low bits of its address.
type penalties struct {
	mu     sync.Mutex
	min    time.Duration
	byAddr map[netip.Prefix]*penalty
}

type penalty struct {
	until time.Time     // refused until then
	next  time.Duration // the penalty of the next failure
}

func newPenalties(min time.Duration) *penalties {
	return &penalties{min: min, byAddr: make(map[netip.Prefix]*penalty)}
}

// fail records a failed authentication from key and returns its penalty.
func (p *penalties) fail(key netip.Prefix) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	e := p.byAddr[key]
	if e == nil || now.After(e.until.Add(maxPenalty)) {
		if len(p.byAddr) >= maxPenaltyTable {
			p.shrink(now)
		}
		e = &penalty{next: p.min}
		p.byAddr[key] = e
	}
	d := e.next
	e.until = now.Add(d)
	e.next = min(2*d, maxPenalty)
	return d
}

// shrink makes room: forgotten entries go, and if none were, the one whose
// penalty ends first.
func (p *penalties) shrink(now time.Time) {
	var first netip.Prefix
	var firstUntil time.Time
	for k, e := range p.byAddr {
		if now.After(e.until.Add(maxPenalty)) {
			delete(p.byAddr, k)
		} else if firstUntil.IsZero() || e.until.Before(firstUntil) {
			first, firstUntil = k, e.until
		}
	}
	if len(p.byAddr) >= maxPenaltyTable {
		delete(p.byAddr, first)
	}
}

// refused says how long key must still wait; 0 when it may try.
func (p *penalties) refused(key netip.Prefix) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.byAddr[key]; e != nil {
		return max(time.Until(e.until), 0)
	}
	return 0
}

// forgive clears key's failures: it authenticated.
func (p *penalties) forgive(key netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byAddr, key)
}

// clientKey is what the server's per-address bounds count by: the IPv4
// address, or the IPv6 /64 (one host's, or one site's, usual share).
func clientKey(a net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
