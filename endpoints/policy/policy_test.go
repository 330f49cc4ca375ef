package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/quictun/quictun/endpoints/address"
)

func tcp(s string) address.Address  { return address.Address{Network: "tcp", Addr: s} }
func unix(s string) address.Address { return address.Address{Network: "unix", Addr: s} }

func TestCheck(t *testing.T) {
	p, err := Parse([]string{"10.0.0.0/8:22", "127.0.0.1:5000-5100", "[2001:db8::/32]:*",
		"localhost:8080", "unix:/run/app.sock", "unix:/run/apps/*"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	allowed := map[address.Address]string{
		tcp("10.1.2.3:22"):         "tcp:10.1.2.3:22",
		tcp("127.0.0.1:5000"):      "tcp:127.0.0.1:5000",
		tcp("127.0.0.1:5100"):      "tcp:127.0.0.1:5100",
		tcp("[2001:db8::1]:443"):   "tcp:[2001:db8::1]:443",
		tcp("localhost:8080"):      "", // resolved: either loopback address
		tcp("127.0.0.1:8080"):      "tcp:127.0.0.1:8080",
		unix("/run/app.sock"):      "unix:/run/app.sock",
		unix("/run/apps/a.sock"):   "unix:/run/apps/a.sock",
		unix("/run/apps/./b.sock"): "unix:/run/apps/b.sock",
	}
	for target, want := range allowed {
		got, err := p.Check(ctx, target)
		if err != nil {
			t.Errorf("%s refused: %v", target, err)
			continue
		}
		if want != "" && got.String() != want {
			t.Errorf("%s: dial %s, want %s", target, got, want)
		}
	}
	for _, target := range []address.Address{
		tcp("10.1.2.3:23"), tcp("11.0.0.1:22"), tcp("127.0.0.1:5101"), tcp("127.0.0.1:4999"),
		tcp("[2001:db9::1]:443"), tcp("127.0.0.2:8080"), unix("/run/app.sock2"),
		unix("/run/apps/sub/c.sock"), unix("/run/apps/../app2.sock"), unix("/run/apps"),
		tcp("no-such-host.invalid:22"),
	} {
		if got, err := p.Check(ctx, target); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s allowed as %s (%v)", target, got, err)
		}
	}
	var none *Policy
	if got, err := none.Check(ctx, tcp("1.2.3.4:5")); err != nil || got != tcp("1.2.3.4:5") {
		t.Errorf("no rules must allow all: %v %v", got, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:9-1",
		"10.0.0.0/33:22", "unix:relative.sock", ":22", "a b:22"} {
		if _, err := Parse([]string{s}); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if p, err := Parse(nil); p != nil || err != nil {
		t.Errorf("no rules: %v %v", p, err)
	}
}

func FuzzParseAndCheck(f *testing.F) {
	f.Add("10.0.0.0/8:22", "tcp:10.0.0.1:22")
	f.Add("unix:/run/apps/*", "unix:/run/apps/../x")
	f.Fuzz(func(t *testing.T, rule, target string) {
		p, err := Parse([]string{rule})
		if err != nil {
			return
		}
		a, err := address.Parse(target)
		if err != nil || a.Network == "tcp" && !isLiteral(a.Addr) {
			return // no DNS in a fuzzer
		}
		p.Check(context.Background(), a)
	})
}

func isLiteral(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	_, err = netip.ParseAddr(host)
	return err == nil
}
