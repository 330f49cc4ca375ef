package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quictun/quictun/endpoints/address"
)

// Rules are an administrator's allow and deny rules (--allow, --deny, or an
// identity's own). Once there is an allow rule, tokens may name only what
// the allow rules match; a deny rule refuses what it matches, whatever
// allows it. The nil *Rules has none.
type Rules struct {
	allow, deny []rule
}

// rule is one parsed rule: TCP (a prefix or a host name, and ports) or UNIX
// (an exact path, or a directory whose sockets it covers).
type rule struct {
	text   string
	prefix netip.Prefix // for TCP, unless host is set
	host   string       // a host name, resolved when a tunnel asks
	lo, hi uint16
	unix   string // for UNIX: a cleaned absolute path, or an abstract "@name"
	dir    bool   // unix names a directory: "unix:DIR/*"
}

// Parse reads allow and deny rules like "10.0.0.0/8:22",
// "127.0.0.1:5000-5100", "[2001:db8::/32]:*", "db.internal:5432",
// "unix:/run/app.sock", "unix:/run/apps/*" and "unix:@abstract". A mapped
// IPv6 prefix ("::ffff:10.0.0.0/104") means its IPv4 prefix. No rules at all
// is the nil *Rules.
func Parse(allow, deny []string) (*Rules, error) {
	if len(allow) == 0 && len(deny) == 0 {
		return nil, nil
	}
	r := &Rules{}
	var err error
	if r.allow, err = parseRules("allow", allow); err != nil {
		return nil, err
	}
	if r.deny, err = parseRules("deny", deny); err != nil {
		return nil, err
	}
	return r, nil
}

// RuleError is a rule that does not parse, in the list ("allow" or "deny")
// that holds it, so that a caller can say which setting is wrong.
type RuleError struct {
	List, Rule string
	Err        error
}

func (e *RuleError) Error() string { return fmt.Sprintf("%s rule %q: %v", e.List, e.Rule, e.Err) }
func (e *RuleError) Unwrap() error { return e.Err }

func parseRules(list string, specs []string) ([]rule, error) {
	var rules []rule
	for _, s := range specs {
		r, err := parseRule(strings.TrimSpace(s))
		if err != nil {
			return nil, &RuleError{List: list, Rule: s, Err: err}
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseRule(s string) (rule, error) {
	r := rule{text: s}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		return parseUnixRule(r, path)
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
	bracketed := strings.HasPrefix(hostPart, "[")
	if bracketed != strings.HasSuffix(hostPart, "]") {
		return rule{}, fmt.Errorf("unbalanced brackets in %q", hostPart)
	}
	hostPart = strings.TrimSuffix(strings.TrimPrefix(hostPart, "["), "]")
	switch {
	case hostPart == "":
		return rule{}, errors.New("missing host or CIDR")
	case strings.Contains(hostPart, "/"):
		p, err := netip.ParsePrefix(hostPart)
		if err != nil {
			return rule{}, err
		}
		if r.prefix, err = unmapPrefix(p); err != nil {
			return rule{}, err
		}
	default:
		if a, err := netip.ParseAddr(hostPart); err == nil {
			switch {
			case a.Zone() != "":
				return rule{}, fmt.Errorf("%s: a zone does not restrict a rule; leave it out", hostPart)
			case a.Is6() && !bracketed:
				return rule{}, fmt.Errorf("write an IPv6 address in brackets: [%s]:PORTS", hostPart)
			}
			a = a.Unmap()
			r.prefix = netip.PrefixFrom(a, a.BitLen())
		} else if strings.ContainsAny(hostPart, " /\\%[]\x00") || strings.Trim(hostPart, "0123456789.") == "" {
			return rule{}, fmt.Errorf("bad host %q", hostPart)
		} else {
			r.host = hostPart
		}
	}
	return r, nil
}

// unmapPrefix turns a prefix of IPv4-mapped IPv6 addresses into its IPv4
// prefix: targets are unmapped before they are matched, so the mapped form
// would match nothing.
func unmapPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.Addr().Is4In6() {
		return p.Masked(), nil
	}
	if p.Bits() < 96 {
		return netip.Prefix{}, fmt.Errorf("%s: a prefix of mapped IPv4 addresses needs at least 96 bits (::ffff:0:0/96 is all of IPv4)", p)
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked(), nil
}

func parseUnixRule(r rule, path string) (rule, error) {
	if strings.HasPrefix(path, "@") {
		if len(path) < 2 || strings.ContainsRune(path, 0) {
			return rule{}, errors.New("an abstract socket rule needs a name after @")
		}
		r.unix = path
		return r, nil
	}
	if dir, ok := strings.CutSuffix(path, "/*"); ok {
		r.dir, path = true, dir
	}
	if !filepath.IsAbs(path) {
		return rule{}, errors.New("a UNIX socket rule needs an absolute path")
	}
	if !address.UnixTargetsSupported {
		return rule{}, errors.New("UNIX socket targets are supported on Linux and Windows only")
	}
	r.unix = filepath.Clean(path)
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

func (r rule) isUnix() bool { return r.unix != "" }

// coversPath says whether a UNIX rule covers a cleaned path: the path
// itself, or a name directly in the rule's directory.
func (r rule) coversPath(path string) bool {
	if r.dir {
		return !strings.HasPrefix(path, "@") && filepath.Dir(path) == r.unix
	}
	return path == r.unix
}

// names says whether a TCP rule that matches ip names its special range
// explicitly, so that a broad rule (0.0.0.0/0) does not open loopback or
// metadata: a host name rule names what it resolves to; a prefix rule names
// a range it lies within (127.0.0.1:22 names loopback, 169.254.0.0/16 does
// not name 169.254.169.254); and only a single address names one of this
// host's own addresses.
func (r rule) names(rg addrRange, own bool) bool {
	if r.host != "" {
		return true
	}
	if own && !r.prefix.IsSingleIP() {
		return false
	}
	if !rg.kind.special() {
		return true
	}
	return r.prefix.Bits() >= rg.prefix.Bits() && rg.prefix.Contains(r.prefix.Addr())
}

// hasTCP says whether any rule is a TCP rule.
func hasTCP(rules []rule) bool {
	for _, r := range rules {
		if !r.isUnix() {
			return true
		}
	}
	return false
}

// layer is an identity's rules over the server's: the identity's allow
// rules, when it has any, replace the server's; deny rules add up.
func (r *Rules) layer(over *Rules) *Rules {
	if over == nil {
		return r
	}
	if r == nil {
		return over
	}
	out := &Rules{allow: r.allow, deny: append(append([]rule(nil), r.deny...), over.deny...)}
	if len(over.allow) > 0 {
		out.allow = over.allow
	}
	return out
}

func (r *Rules) allowRules() []rule {
	if r == nil {
		return nil
	}
	return r.allow
}

func (r *Rules) denyRules() []rule {
	if r == nil {
		return nil
	}
	return r.deny
}

func texts(rules []rule) string {
	ts := make([]string, len(rules))
	for i, r := range rules {
		ts[i] = r.text
	}
	return strings.Join(ts, " ")
}
