package policy

import "net/netip"

// kind is what an address range is to the policy.
type kind int

const (
	public    kind = iota // everything not below
	private               // RFC 1918, CGNAT, ULA: the internal services a server fronts
	loopback              // this host's own services
	linkLocal             // the local link, where cloud metadata lives
	metadata              // cloud metadata and host agents: credentials for the asking
	thisNet               // 0.0.0.0/8 ("this network", which Linux may route to this host) and ::/96
	multicast
	broadcast
)

// special kinds are refused unless a rule names them (see rule.names); in a
// local setup loopback is not special.
func (k kind) special() bool { return k > private }

func (k kind) String() string {
	return [...]string{"public", "private", "loopback", "link-local", "cloud metadata", "this-network", "multicast", "broadcast"}[k]
}

// addrRange is one row of the table; the most specific row containing an
// address decides its kind, so 169.254.169.254 is metadata inside link-local
// and 100.100.100.200 metadata inside CGNAT.
type addrRange struct {
	prefix netip.Prefix
	kind   kind
	note   string
}

var ranges = []addrRange{
	{pfx("10.0.0.0/8"), private, "RFC 1918"},
	{pfx("172.16.0.0/12"), private, "RFC 1918"},
	{pfx("192.168.0.0/16"), private, "RFC 1918"},
	{pfx("100.64.0.0/10"), private, "CGNAT, RFC 6598"},
	{pfx("fc00::/7"), private, "unique local, RFC 4193"},
	{pfx("127.0.0.0/8"), loopback, ""},
	{pfx("::1/128"), loopback, ""},
	{pfx("169.254.0.0/16"), linkLocal, ""},
	{pfx("fe80::/10"), linkLocal, ""},
	{pfx("169.254.169.254/32"), metadata, "AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ..."},
	{pfx("169.254.170.2/32"), metadata, "AWS ECS task credentials"},
	{pfx("169.254.170.23/32"), metadata, "AWS EKS pod identity"},
	{pfx("fd00:ec2::/32"), metadata, "AWS over IPv6: IMDS fd00:ec2::254, pod identity, DNS, NTP"},
	{pfx("fd20:ce::254/128"), metadata, "GCP over IPv6"},
	{pfx("100.100.100.200/32"), metadata, "Alibaba Cloud"},
	{pfx("168.63.129.16/32"), metadata, "Azure WireServer"},
	{pfx("192.0.0.192/32"), metadata, "Oracle Cloud Classic"},
	{pfx("0.0.0.0/8"), thisNet, "0.0.0.0/8"},
	{pfx("::/96"), thisNet, "IPv4-compatible ::/96, deprecated"},
	{pfx("224.0.0.0/4"), multicast, ""},
	{pfx("ff00::/8"), multicast, ""},
	{pfx("255.255.255.255/32"), broadcast, ""},
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// nat64 is the well-known NAT64 prefix (RFC 6052): behind a translator,
// 64:ff9b::a9fe:a9fe is 169.254.169.254.
var nat64 = pfx("64:ff9b::/96")

// classify finds the most specific range holding ip (unmapped, no zone); an
// address in none is public, in a range of its own (the zero prefix). A NAT64
// address is what the IPv4 address in it is, when that is special; no IPv6
// rule lies within an IPv4 range, so only a host name rule can name it.
func classify(ip netip.Addr) addrRange {
	if nat64.Contains(ip) {
		b := ip.As16()
		if v4 := classifyTable(netip.AddrFrom4([4]byte(b[12:]))); v4.kind.special() {
			return v4
		}
	}
	return classifyTable(ip)
}

func classifyTable(ip netip.Addr) addrRange {
	best := addrRange{kind: public}
	for _, r := range ranges {
		if r.prefix.Contains(ip) && (!best.prefix.IsValid() || r.prefix.Bits() > best.prefix.Bits()) {
			best = r
		}
	}
	return best
}
