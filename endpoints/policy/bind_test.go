package policy

import (
	"testing"

	"github.com/quictun/quictun/endpoints/address"
)

func TestBindRules(t *testing.T) {
	b, err := ParseBind([]string{"0.0.0.0:2222", "198.18.0.0/15:8000-8100", "[::1]:2200", "127.0.0.1:*", "unix:/run/rev/*"})
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"tcp:0.0.0.0:2222":         true,
		"tcp:0.0.0.0:2223":         false,
		"tcp:198.18.0.9:8050":      true,
		"tcp:198.18.0.9:8101":      false,
		"tcp:198.20.0.9:8050":      false,
		"tcp:[::1]:2200":           true,
		"tcp:[::ffff:127.0.0.1]:9": true, // mapped: the IPv4 address
		"tcp:127.0.0.1:0":          false,
		"tcp:localhost:2222":       false, // a listener binds an address
		"unix:/run/rev/a.sock":     true,
		"unix:/run/rev/../x.sock":  false,
		"unix:/run/other.sock":     false,
		"udp:0.0.0.0:2222":         false, // a plain rule is TCP's only
		"udp:127.0.0.1:53":         false,
	} {
		a, err := address.ParseListen(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := b.Permits(a); got != want {
			t.Errorf("%s: permits %v, want %v", s, got, want)
		}
	}
	// A broad prefix is not every interface at once.
	wide, _ := ParseBind([]string{"0.0.0.0/0:2222"})
	if wide.Permits(address.Address{Network: address.TCP, Addr: "0.0.0.0:2222"}) {
		t.Error("0.0.0.0/0 permits binding the unspecified address")
	}
	if !wide.Permits(address.Address{Network: address.TCP, Addr: "198.18.0.1:2222"}) {
		t.Error("0.0.0.0/0 does not permit an address inside it")
	}
	// UDP is permitted by udp: rules only, and they permit no TCP.
	mixed, err := ParseBind([]string{"udp:0.0.0.0:5353", "udp:198.18.0.0/15:5000-5100", "tcp:0.0.0.0:2222"})
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"udp:0.0.0.0:5353":    true,
		"tcp:0.0.0.0:5353":    false,
		"udp:198.18.1.2:5050": true,
		"udp:198.18.1.2:5101": false,
		"udp:0.0.0.0:5050":    false, // a prefix is not every interface
		"tcp:0.0.0.0:2222":    true,  // tcp: says what a plain rule says
		"udp:0.0.0.0:2222":    false,
		"udp:127.0.0.1:0":     false,
	} {
		a, err := address.ParseListen(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := mixed.Permits(a); got != want {
			t.Errorf("%s: permits %v, want %v", s, got, want)
		}
	}
	if got := mixed.String(); got != "udp:0.0.0.0:5353 udp:198.18.0.0/15:5000-5100 tcp:0.0.0.0:2222" {
		t.Errorf("String: %q", got)
	}
	var none *BindRules
	if none.Permits(address.Address{Network: address.TCP, Addr: "127.0.0.1:2222"}) {
		t.Error("no rules permit a bind")
	}
	for _, bad := range []string{"example.com:22", "10.0.0.0/8", "1.2.3.4:0", "unix:relative", "udp:unix:/run/x.sock", "udp:example.com:53", "udp:10.0.0.0/8"} {
		if _, err := ParseBind([]string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
