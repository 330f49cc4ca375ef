package policy

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quictun/quictun/endpoints/address"
)

// BindRules say where clients may ask the server to listen for their reverse
// forwards (--allow-bind, an identity's bind=). Unlike target rules there is
// no default: nothing is bound unless a rule names the address and port. A
// rule is an address or prefix with ports ("0.0.0.0:2222",
// "198.18.0.0/15:8000-8100", "[::]:2222") or a UNIX socket ("unix:PATH",
// "unix:DIR/*"); host names are refused, since a listener binds an address.
// The unspecified address (0.0.0.0, ::) is matched only by a rule that names
// it as a single address: a prefix such as 0.0.0.0/0 means the addresses in
// it, not every interface at once. The nil *BindRules permits nothing.
//
// A plain address rule permits TCP listeners only (so is one written
// "tcp:0.0.0.0:2222"); a UDP socket needs a rule that says udp:
// ("udp:0.0.0.0:5353", "udp:198.18.0.0/15:5000-5100"). Rules written before
// reverse UDP forwards existed thus open no UDP port.
type BindRules struct{ rules []bindRule }

type bindRule struct {
	rule
	udp bool // the rule said udp: and permits UDP sockets only
}

// ParseBind reads bind rules; no rules is the nil *BindRules.
func ParseBind(specs []string) (*BindRules, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	b := &BindRules{}
	for _, s := range specs {
		s = strings.TrimSpace(s)
		text, udp := strings.CutPrefix(s, "udp:")
		if !udp {
			text = strings.TrimPrefix(text, "tcp:")
		}
		r, err := parseRule(text)
		if err != nil {
			return nil, &RuleError{List: "allow-bind", Rule: s, Err: err}
		}
		switch {
		case r.host != "":
			return nil, &RuleError{List: "allow-bind", Rule: s, Err: errors.New("a bind rule names an address or prefix, not a host name")}
		case r.isUnix() && text != s:
			return nil, &RuleError{List: "allow-bind", Rule: s, Err: errors.New("a UNIX socket rule takes no tcp: or udp:")}
		}
		r.text = s
		b.rules = append(b.rules, bindRule{rule: r, udp: udp})
	}
	return b, nil
}

// Permits says whether a client may have the server listen on a.
func (b *BindRules) Permits(a address.Address) bool {
	if b == nil {
		return false
	}
	if a.Network == address.Unix {
		path := a.Addr
		if !strings.HasPrefix(path, "@") {
			path = filepath.Clean(path)
		}
		for _, r := range b.rules {
			if r.isUnix() && r.coversPath(path) {
				return true
			}
		}
		return false
	}
	udp := a.Network == address.UDP
	if a.Network != address.TCP && !udp {
		return false
	}
	host, portText, err := net.SplitHostPort(a.Addr)
	if err != nil {
		return false
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return false // an ephemeral port is not a published one
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	for _, r := range b.rules {
		if r.isUnix() || r.udp != udp || uint16(port) < r.lo || uint16(port) > r.hi || !r.prefix.Contains(ip) {
			continue
		}
		if ip.IsUnspecified() && !r.prefix.IsSingleIP() {
			continue
		}
		return true
	}
	return false
}

// String lists the rules, for logs.
func (b *BindRules) String() string {
	if b == nil {
		return "none"
	}
	rules := make([]rule, len(b.rules))
	for i, r := range b.rules {
		rules[i] = r.rule
	}
	return texts(rules)
}
