package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/quictun/quictun/endpoints/address"
)

func tcp(s string) address.Address  { return address.Address{Network: "tcp", Addr: s} }
func unix(s string) address.Address { return address.Address{Network: "unix", Addr: s} }

// newPolicy is the policy of a server bound to listen (UDP), with rules.
func newPolicy(t testing.TB, listen string, authenticated bool, rules *Rules, listening ...string) *Policy {
	t.Helper()
	udp, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Setup{Listen: udp, Listening: listening, Authenticated: authenticated}, rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t testing.TB, allow, deny []string) *Rules {
	t.Helper()
	r, err := Parse(allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// hostAddr is one of this host's interface addresses that is not loopback,
// or the zero Addr when it has none.
func hostAddr(t testing.TB) netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			ip, _ := netip.AddrFromSlice(n.IP)
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// The default policy, without any rule, for each of the three setups: a
// server on loopback only (local), one beyond loopback without client
// authentication (open), and one with it (auth). Every special range has a
// row; so do the server's own listeners.
func TestDefaultPolicyTable(t *testing.T) {
	type verdict struct{ local, open, auth bool }
	const api = "127.0.0.1:18086"
	refused := verdict{}
	localOnly := verdict{local: true}
	internal := verdict{true, true, true}
	publicOnly := verdict{auth: true}
	rows := []struct {
		target address.Address
		want   verdict
	}{
		{tcp("127.0.0.1:22"), localOnly},
		{tcp("127.8.9.10:22"), localOnly},
		{tcp("[::1]:22"), localOnly},
		{tcp("[::ffff:127.0.0.1]:22"), localOnly},
		{tcp("localhost:22"), localOnly},
		{tcp("169.254.1.1:80"), refused},
		{tcp("169.254.169.254:80"), refused},
		{tcp("[::ffff:169.254.169.254]:80"), refused},
		{tcp("169.254.170.2:80"), refused},
		{tcp("[fe80::1]:80"), refused},
		{tcp("[fe80::1%lo]:80"), refused},
		{tcp("[fd00:ec2::254]:80"), refused}, // inside the private fc00::/7
		{tcp("[fd20:ce::254]:80"), refused},
		{tcp("100.100.100.200:80"), refused}, // inside the private 100.64.0.0/10
		{tcp("168.63.129.16:80"), refused},
		{tcp("0.0.0.0:22"), refused},
		{tcp("[::]:22"), refused},
		{tcp("0.1.2.3:22"), refused},
		{tcp("[::127.0.0.1]:22"), refused},
		{tcp("[64:ff9b::a9fe:a9fe]:80"), refused}, // 169.254.169.254 behind NAT64
		{tcp("[64:ff9b::7f00:1]:22"), refused},
		{tcp("[64:ff9b::a01:203]:22"), publicOnly}, // 10.1.2.3 behind NAT64: the translator's network, not ours
		{tcp("224.0.0.1:80"), refused},
		{tcp("[ff02::1]:80"), refused},
		{tcp("255.255.255.255:80"), refused},
		{tcp(api), refused},
		{tcp("10.1.2.3:22"), internal},
		{tcp("172.16.0.1:5432"), internal},
		{tcp("172.31.255.254:5432"), internal},
		{tcp("192.168.1.1:80"), internal},
		{tcp("100.64.0.1:80"), internal},
		{tcp("[fd12:3456::1]:22"), internal},
		{tcp("[::ffff:10.1.2.3]:22"), internal},
		{tcp("172.32.0.1:80"), publicOnly},
		{tcp("8.8.8.8:53"), publicOnly},
		{tcp("[2001:4860::8888]:443"), publicOnly},
		{unix("/run/app.sock"), localOnly},
		{unix("/var/run/docker.sock"), localOnly},
		{unix("@abstract"), localOnly},
	}
	if ip := hostAddr(t); ip.IsValid() {
		// This host's own address: refused beyond loopback like loopback
		// itself; in a local setup it is what its range makes it.
		want := refused
		if classify(ip).kind == private {
			want = localOnly
		}
		rows = append(rows, struct {
			target address.Address
			want   verdict
		}{tcp(netip.AddrPortFrom(ip, 22).String()), want})
	}
	setups := []struct {
		name string
		p    *Policy
		pick func(verdict) bool
	}{
		{"local", newPolicy(t, "127.0.0.1:7500", false, nil, api), func(v verdict) bool { return v.local }},
		{"open", newPolicy(t, "0.0.0.0:7500", false, nil, api), func(v verdict) bool { return v.open }},
		{"auth", newPolicy(t, "[::]:7500", true, nil, api), func(v verdict) bool { return v.auth }},
	}
	ctx := context.Background()
	for _, s := range setups {
		for _, row := range rows {
			got, err := s.p.Check(ctx, row.target)
			want := s.pick(row.want)
			switch {
			case want && err != nil:
				t.Errorf("%s: %s refused: %v", s.name, row.target, err)
			case !want && err == nil:
				t.Errorf("%s: %s allowed as %s", s.name, row.target, got)
			case !want && !errors.Is(err, ErrForbidden):
				t.Errorf("%s: %s: %v does not wrap ErrForbidden", s.name, row.target, err)
			}
		}
		// The server's own UDP port is one of its listeners too.
		if _, err := s.p.Check(ctx, tcp("127.0.0.1:7500")); err == nil {
			t.Errorf("%s: the server's own port allowed", s.name)
		}
	}
}

func TestDialsTheCheckedAddress(t *testing.T) {
	p := newPolicy(t, "0.0.0.0:7500", true, nil)
	ctx := context.Background()
	for in, want := range map[address.Address]string{
		tcp("[::ffff:10.1.2.3]:22"):       "tcp:10.1.2.3:22",
		tcp("10.1.2.3:22"):                "tcp:10.1.2.3:22",
		tcp("[2001:db8::1]:443"):          "tcp:[2001:db8::1]:443",
		tcp("[fd00::1%eth0]:22"):          "tcp:[fd00::1%eth0]:22",
		unix("/run/apps/./b.sock"):        "",
		unix("/run/apps/../apps/b.sock"):  "",
		tcp("[2001:db8::1%eth0]:443"):     "tcp:[2001:db8::1%eth0]:443",
		tcp("[::ffff:192.168.0.1]:65535"): "tcp:192.168.0.1:65535",
	} {
		got, err := p.Check(ctx, in)
		if want == "" {
			if err == nil {
				t.Errorf("%s allowed as %s", in, got)
			}
			continue
		}
		if err != nil || got.String() != want {
			t.Errorf("%s: dial %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []address.Address{tcp("10.1.2.3:0"), tcp("10.1.2.3"), tcp("no-such-host.invalid:22"), {Network: "sctp", Addr: "10.1.2.3:53"}} {
		if got, err := p.Check(ctx, bad); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s allowed as %s (%v)", bad, got, err)
		}
	}
}

// A broad rule covers what it says but no special range; a rule that names
// one opens it, and only it.
func TestRulesMustNameSpecialRanges(t *testing.T) {
	ctx := context.Background()
	own := hostAddr(t)
	cases := []struct {
		allow   []string
		allowed []string
		refused []string
	}{
		{
			allow:   []string{"0.0.0.0/0:*", "[::/0]:*"},
			allowed: []string{"8.8.8.8:53", "10.1.2.3:22", "[2001:db8::1]:443", "[fd12::1]:22"},
			refused: []string{"127.0.0.1:22", "[::1]:22", "169.254.169.254:80", "169.254.1.1:80", "[fe80::1]:22",
				"[fd00:ec2::254]:80", "100.100.100.200:80", "224.0.0.1:80", "0.0.0.0:22", "[::]:22", "0.1.2.3:22", "255.255.255.255:80"},
		},
		{
			allow:   []string{"[::ffff:0:0/96]:*", "10.0.0.0/8:*"},
			allowed: []string{"8.8.8.8:53", "10.1.2.3:22"},
			refused: []string{"127.0.0.1:22", "169.254.169.254:80", "[2001:db8::1]:443"},
		},
		{
			allow:   []string{"127.0.0.1:22", "127.0.0.1:5000-5100", "169.254.0.0/16:80", "[fe80::/10]:22"},
			allowed: []string{"127.0.0.1:22", "127.0.0.1:5000", "127.0.0.1:5100", "169.254.1.1:80", "[fe80::1%lo]:22"},
			refused: []string{"127.0.0.1:23", "127.0.0.1:4999", "127.0.0.1:5101", "127.0.0.2:22", "169.254.169.254:80", "10.1.2.3:22", "8.8.8.8:53"},
		},
		{
			allow:   []string{"169.254.169.254:80", "127.0.0.0/8:*", "[fd00:ec2::254]:80", "localhost:8080"},
			allowed: []string{"169.254.169.254:80", "127.5.5.5:9", "[fd00:ec2::254]:80", "localhost:8080"},
			refused: []string{"169.254.169.253:80", "[fd00:ec2::253]:80", "[::1]:9"},
		},
		{
			allow:   []string{"[::ffff:10.0.0.0/104]:22", "[::ffff:192.168.1.7]:80"},
			allowed: []string{"10.1.2.3:22", "[::ffff:10.1.2.3]:22", "192.168.1.7:80"},
			refused: []string{"11.0.0.1:22", "10.1.2.3:23", "192.168.1.8:80"},
		},
	}
	if own.IsValid() {
		single := netip.AddrPortFrom(own, 22).String()
		wide, _ := own.Prefix(own.BitLen() - 8)
		cases = append(cases, struct {
			allow   []string
			allowed []string
			refused []string
		}{
			allow:   []string{single, "[" + wide.String() + "]:80"},
			allowed: []string{single},
			refused: []string{netip.AddrPortFrom(own, 80).String()},
		})
	}
	for _, c := range cases {
		p := newPolicy(t, "0.0.0.0:7500", false, mustParse(t, c.allow, nil))
		for _, s := range c.allowed {
			if _, err := p.Check(ctx, tcp(s)); err != nil {
				t.Errorf("allow %v: %s refused: %v", c.allow, s, err)
			}
		}
		for _, s := range c.refused {
			if got, err := p.Check(ctx, tcp(s)); err == nil {
				t.Errorf("allow %v: %s allowed as %s", c.allow, s, got)
			}
		}
	}
}

// Every address a host name resolves to must pass: localhost may be both
// 127.0.0.1 and ::1, and a rule naming only one of them refuses the name.
func TestEveryResolvedAddressMustPass(t *testing.T) {
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	p := newPolicy(t, "0.0.0.0:7500", true, mustParse(t, []string{"[::1]:22", "127.0.0.1:22"}, nil))
	if _, err := p.Check(context.Background(), tcp("localhost:22")); err != nil {
		t.Errorf("localhost (%v) with both named: %v", ips, err)
	}
	for _, ip := range ips {
		other := "[::1]:22"
		if ip.Unmap().Is6() {
			other = "127.0.0.1:22"
		}
		if len(ips) < 2 {
			break
		}
		p := newPolicy(t, "0.0.0.0:7500", true, mustParse(t, []string{other}, nil))
		if got, err := p.Check(context.Background(), tcp("localhost:22")); err == nil {
			t.Errorf("localhost (%v) allowed as %s with only %s named", ips, got, other)
		}
	}
}

func TestDenyWins(t *testing.T) {
	ctx := context.Background()
	p := newPolicy(t, "0.0.0.0:7500", false, mustParse(t,
		[]string{"10.0.0.0/8:*", "127.0.0.1:22", "unix:/run/apps/*"},
		[]string{"10.0.0.5:22", "[::ffff:10.9.0.0/112]:*", "127.0.0.0/8:*", "unix:/run/apps/docker.sock"}))
	for _, s := range []address.Address{tcp("10.0.0.5:22"), tcp("10.9.1.1:80"), tcp("127.0.0.1:22"), unix("/run/apps/docker.sock")} {
		if got, err := p.Check(ctx, s); err == nil {
			t.Errorf("%s allowed as %s", s, got)
		}
	}
	for _, s := range []address.Address{tcp("10.0.0.5:23"), tcp("10.0.0.6:22"), tcp("10.8.1.1:80"), unix("/run/apps/app.sock")} {
		if _, err := p.Check(ctx, s); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
	// Deny rules alone narrow the defaults.
	p = newPolicy(t, "0.0.0.0:7500", false, mustParse(t, nil, []string{"192.168.0.0/16:*"}))
	if _, err := p.Check(ctx, tcp("192.168.1.1:22")); err == nil {
		t.Error("a denied private address allowed")
	}
	if _, err := p.Check(ctx, tcp("10.1.1.1:22")); err != nil {
		t.Errorf("the defaults lost with a deny rule: %v", err)
	}
	if _, err := p.Check(ctx, tcp("127.0.0.1:22")); err == nil {
		t.Error("loopback allowed once a deny rule is set")
	}
}

// The server's own listeners are never a target, whatever the rules.
func TestOwnListenersNeverAllowed(t *testing.T) {
	ctx := context.Background()
	rules := mustParse(t, []string{"127.0.0.0/8:*", "[::1]:*", "10.0.0.0/8:*"}, nil)
	p := newPolicy(t, "0.0.0.0:7500", true, rules, "127.0.0.1:18086", "[::]:9000", "10.0.0.7:9100")
	for _, s := range []string{"127.0.0.1:18086", "127.0.0.1:9000", "127.9.9.9:9000", "[::1]:9000", "10.0.0.7:9100", "127.0.0.1:7500"} {
		if got, err := p.Check(ctx, tcp(s)); err == nil {
			t.Errorf("%s allowed as %s", s, got)
		}
	}
	for _, s := range []string{"127.0.0.1:18087", "127.0.0.2:18086", "10.0.0.8:9100", "10.0.0.7:9101"} {
		if _, err := p.Check(ctx, tcp(s)); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
	if own := hostAddr(t); own.IsValid() {
		p := newPolicy(t, "0.0.0.0:7500", true, mustParse(t, []string{netip.PrefixFrom(own, own.BitLen()).String() + ":*"}, nil), ":9000")
		if got, err := p.Check(ctx, tcp(netip.AddrPortFrom(own, 9000).String())); err == nil {
			t.Errorf("the API on every address reached at this host's %s as %s", own, got)
		}
		if _, err := p.Check(ctx, tcp(netip.AddrPortFrom(own, 9001).String())); err != nil {
			t.Errorf("this host's %s, named by a rule: %v", own, err)
		}
	}
	if _, err := New(Setup{Listening: []string{"nonsense"}}, nil); err == nil {
		t.Error("a bad listen address accepted")
	}
}

func TestUnixRules(t *testing.T) {
	ctx := context.Background()
	p := newPolicy(t, "0.0.0.0:7500", true, mustParse(t, []string{"unix:/run/app.sock", "unix:/run/apps/*", "unix:@portal", "10.0.0.0/8:*"}, nil))
	for in, want := range map[address.Address]string{
		unix("/run/app.sock"):      "unix:/run/app.sock",
		unix("/run/apps/a.sock"):   "unix:/run/apps/a.sock",
		unix("/run/apps/./b.sock"): "unix:/run/apps/b.sock",
		unix("@portal"):            "unix:@portal",
	} {
		got, err := p.Check(ctx, in)
		if err != nil || got.String() != want {
			t.Errorf("%s: %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []address.Address{unix("/run/app.sock2"), unix("/run/apps/sub/c.sock"), unix("/run/apps/../app2.sock"),
		unix("/run/apps"), unix("@portal2"), unix("@/run/apps/x"), unix("run/app.sock")} {
		if got, err := p.Check(ctx, in); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s allowed as %s (%v)", in, got, err)
		}
	}
	// Rules without a UNIX one refuse UNIX sockets, in a local setup too.
	p = newPolicy(t, "127.0.0.1:7500", false, mustParse(t, []string{"127.0.0.1:22"}, nil))
	if got, err := p.Check(ctx, unix("/run/app.sock")); err == nil {
		t.Errorf("a UNIX socket allowed by a TCP rule, as %s", got)
	}
}

// An identity's rules replace the server's allow rules and add to its deny
// rules; what no rule can allow stays refused.
func TestWithLayersAnIdentity(t *testing.T) {
	ctx := context.Background()
	base := newPolicy(t, "0.0.0.0:7500", true, mustParse(t, []string{"10.0.0.0/8:22"}, []string{"10.0.0.9:*"}), "0.0.0.0:18086")
	alice := base.With(mustParse(t, []string{"10.0.0.0/8:*", "0.0.0.0/0:18086", "127.0.0.1:22"}, []string{"10.1.0.0/16:*"}))
	bob := base.With(nil)
	if bob != base {
		t.Error("With(nil) is not the base")
	}
	for _, c := range []struct {
		p      *Policy
		target string
		ok     bool
	}{
		{base, "10.2.3.4:22", true}, {base, "10.2.3.4:80", false}, {base, "10.0.0.9:22", false},
		{alice, "10.2.3.4:80", true}, {alice, "127.0.0.1:22", true}, {alice, "10.0.0.9:22", false},
		{alice, "10.1.2.3:22", false}, {alice, "127.0.0.1:18086", false}, {alice, "8.8.8.8:18086", true},
		{alice, "169.254.169.254:18086", false}, {base, "127.0.0.1:22", false},
	} {
		if _, err := c.p.Check(ctx, tcp(c.target)); (err == nil) != c.ok {
			t.Errorf("%s: allowed %v, want %v (%v)", c.target, err == nil, c.ok, err)
		}
	}
	var none *Policy
	if _, err := none.Check(ctx, tcp("10.0.0.1:22")); !errors.Is(err, ErrForbidden) {
		t.Errorf("the nil policy allowed a target: %v", err)
	}
}

func TestStringSaysWhatIsAllowed(t *testing.T) {
	for _, c := range []struct {
		p    *Policy
		want []string
	}{
		{newPolicy(t, "0.0.0.0:7500", false, nil, "127.0.0.1:18086"), []string{"private ranges only", "no client authentication",
			"loopback", "this host's addresses", "cloud metadata", "UNIX sockets", "never the server's own listeners 0.0.0.0:7500 127.0.0.1:18086"}},
		{newPolicy(t, "0.0.0.0:7500", true, nil), []string{"any address; refused: loopback", "UNIX sockets"}},
		{newPolicy(t, "127.0.0.1:7500", false, nil), []string{"loopback, private ranges and UNIX sockets", "local setup", "refused: link-local"}},
		{newPolicy(t, "0.0.0.0:7500", false, mustParse(t, []string{"10.0.0.0/8:22"}, []string{"10.0.0.9:22"})),
			[]string{"only --allow 10.0.0.0/8:22", "only where a rule names them", "--deny 10.0.0.9:22"}},
	} {
		s := c.p.String()
		for _, w := range c.want {
			if !strings.Contains(s, w) {
				t.Errorf("%q lacks %q", s, w)
			}
		}
		if strings.Contains(s, "\n") {
			t.Errorf("%q is more than one line", s)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:9-1",
		"10.0.0.0/33:22", "unix:relative.sock", ":22", "a b:22", "[::ffff:0:0/95]:22", "[10.0.0.1:22",
		"10.0.0:22", "fe80::1%eth0:22", "[fe80::1%eth0]:22", "unix:@", "300.1.1.1:22"} {
		if _, err := Parse([]string{s}, nil); err == nil {
			t.Errorf("allow %q accepted", s)
		}
		var re *RuleError
		if _, err := Parse(nil, []string{s}); !errors.As(err, &re) || re.List != "deny" {
			t.Errorf("deny %q: %v", s, err)
		}
	}
	if r, err := Parse(nil, nil); r != nil || err != nil {
		t.Errorf("no rules: %v %v", r, err)
	}
}

// FuzzParseAndCheck feeds rules and targets of any shape. Beyond not
// panicking: an unspecified address is never allowed; what is allowed dials
// the target's own address and port; adding broad rules (0.0.0.0/0,
// [::/0]) opens no special range; adding a deny rule never allows more.
func FuzzParseAndCheck(f *testing.F) {
	f.Add("10.0.0.0/8:22", "", "tcp:10.0.0.1:22")
	f.Add("unix:/run/apps/*", "unix:/run/apps/x", "unix:/run/apps/../x")
	f.Add("127.0.0.1:22\n[::ffff:10.0.0.0/104]:*", "10.0.0.5:22", "tcp:[::ffff:127.0.0.1]:22")
	f.Add("169.254.0.0/16:80", "", "tcp:169.254.169.254:80")
	f.Add("0.0.0.0/0:*", "[::/0]:443", "tcp:[fe80::1%eth0]:443")
	f.Add("[fd00::/8]:*", "", "tcp:[fd00:ec2::254]:80")
	f.Fuzz(func(t *testing.T, allowText, denyText, targetText string) {
		allow, deny := lines(allowText), lines(denyText)
		rules, err := Parse(allow, deny)
		if err != nil || hasHostName(rules) {
			return // no DNS in a fuzzer
		}
		target, err := address.Parse(targetText)
		if err != nil || target.Network == address.TCP && !isLiteral(target.Addr) {
			return // no DNS in a fuzzer
		}
		broad, _ := Parse(append(allow, "0.0.0.0/0:*", "[::/0]:*"), deny)
		ctx := context.Background()
		for _, listen := range []string{"127.0.0.1:7500", "0.0.0.0:7500"} {
			for _, auth := range []bool{false, true} {
				p := newPolicy(t, listen, auth, rules)
				got, err := p.Check(ctx, target)
				if err != nil {
					if !errors.Is(err, ErrForbidden) {
						t.Fatalf("%s: refusal %v does not wrap ErrForbidden", target, err)
					}
				} else if target.Network == address.TCP {
					checkDialled(t, target, got)
				}
				if len(deny) > 0 {
					fewer, _ := Parse(allow, deny[:len(deny)-1])
					if err == nil {
						if _, err := newPolicy(t, listen, auth, fewer).Check(ctx, target); err != nil {
							t.Fatalf("%s allowed with deny %q but not without its last rule: %v", target, deny, err)
						}
					}
				}
				if target.Network != address.TCP || listen == "127.0.0.1:7500" {
					continue
				}
				if _, berr := newPolicy(t, listen, auth, broad).Check(ctx, target); berr == nil && err != nil && isSpecial(t, p, target) {
					t.Fatalf("%s: refused under %q, allowed once 0.0.0.0/0 and [::/0] are added", target, allow)
				}
			}
		}
	})
}

func hasHostName(r *Rules) bool {
	for _, r := range slices.Concat(r.allowRules(), r.denyRules()) {
		if r.host != "" {
			return true
		}
	}
	return false
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func isLiteral(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	_, err = netip.ParseAddr(host)
	return err == nil
}

// checkDialled holds that an allowed TCP target dials its own address and
// port, and never an unspecified one.
func checkDialled(t *testing.T, target, got address.Address) {
	want, err := netip.ParseAddrPort(target.Addr)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	dial, err := netip.ParseAddrPort(got.Addr)
	if err != nil || got.Network != address.TCP {
		t.Fatalf("%s allowed as %s (%v)", target, got, err)
	}
	if dial.Addr().IsUnspecified() || dial.Addr() != want.Addr().Unmap() || dial.Port() != want.Port() {
		t.Fatalf("%s allowed as %s", target, got)
	}
}

// isSpecial says whether a literal TCP target is in a special range or is
// one of this host's addresses, for p.
func isSpecial(t *testing.T, p *Policy, target address.Address) bool {
	ap, err := netip.ParseAddrPort(target.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := ap.Addr().Unmap().WithZone("")
	own, _ := p.host.has(ip)
	return classify(ip).kind.special() || own || ip.IsUnspecified()
}

// BenchmarkCheck is the policy's cost per tunnel: a private literal target
// on a server beyond loopback (the range table, the deny and listener checks
// and this host's addresses, read again once a second), against the same
// with rules.
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	for name, rules := range map[string]*Rules{
		"defaults": nil,
		"rules":    mustParse(b, []string{"192.168.0.0/16:*", "10.0.0.0/8:22", "unix:/run/apps/*"}, []string{"10.0.5.0/24:*"}),
	} {
		p := newPolicy(b, "0.0.0.0:7500", false, rules, "127.0.0.1:18086")
		target := tcp("10.1.2.3:22")
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Check(ctx, target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("InterfaceAddrs", func(b *testing.B) {
		for b.Loop() {
			if _, err := net.InterfaceAddrs(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A UDP target is decided as a TCP target of the same host and port: the
// same rules, defaults and own listeners (the server's own UDP port above
// all, which a flow would loop into), and it is dialled as UDP.
func TestUDPTargetsDecidedAsTCP(t *testing.T) {
	ctx := context.Background()
	udp := func(s string) address.Address { return address.Address{Network: address.UDP, Addr: s} }
	p := newPolicy(t, "0.0.0.0:7500", true, mustParse(t, []string{"10.0.0.0/8:53", "127.0.0.0/8:*"}, []string{"10.0.0.9:*"}), "127.0.0.1:9000")
	got, err := p.Check(ctx, udp("10.0.0.5:53"))
	if err != nil || got != udp("10.0.0.5:53") {
		t.Fatalf("allowed UDP target: %v, %v", got, err)
	}
	for _, s := range []string{"10.0.0.5:54", "10.0.0.9:53", "127.0.0.1:7500", "127.0.0.1:9000", "0.0.0.0:53", "169.254.169.254:53"} {
		if got, err := p.Check(ctx, udp(s)); !errors.Is(err, ErrForbidden) {
			t.Errorf("udp:%s allowed as %s", s, got)
		}
	}
	// Without rules, as TCP: an open server's defaults keep loopback out.
	open := newPolicy(t, "0.0.0.0:7500", false, nil)
	if _, err := open.Check(ctx, udp("127.0.0.1:53")); err == nil {
		t.Error("udp:127.0.0.1:53 allowed by an open server's defaults")
	}
}
