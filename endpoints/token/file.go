package token

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
)

func init() { registerSource("File", newFile) }

// file picks the token by the application's IP from a file of lines
// "CLIENT-IP-OR-CIDR TOKEN", with "*" as the default line. An exact IP is a
// /32 (or /128); the most specific match wins. quic-tun matched by string
// prefix, so 10.0.0.1 also matched 10.0.0.10: here a match is by address.
//
// IPv4 is compared as IPv4 on both sides: an application address that arrives
// IPv4-mapped (::ffff:10.0.0.1, from a dual-stack listener) is unmapped, and so
// is a line written that way (::ffff:10.0.0.1, ::ffff:10.0.0.0/104).
type file struct {
	path     string
	rules    []fileRule // most specific first
	fallback string     // the "*" line; "" if none
}

type fileRule struct {
	prefix netip.Prefix
	token  string
}

// maxTokenFileLines bounds the file so a mistaken path (a log, a disk image)
// fails fast instead of filling memory; bufio.Scanner bounds each line.
const maxTokenFileLines = 100000

func newFile(path string, _ SourceOptions) (Source, error) {
	if path == "" {
		return nil, fmt.Errorf("token source File: no file given")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token source File: %w", err)
	}
	defer f.Close()
	return parseTokenFile(path, f)
}

// parseTokenFile reads the lines of a token file; path names it in errors.
func parseTokenFile(path string, r io.Reader) (*file, error) {
	src := &file{path: path}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		if n > maxTokenFileLines {
			return nil, fmt.Errorf("token file %s: more than %d lines", path, maxTokenFileLines)
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("token file %s line %d: want \"CLIENT-IP-OR-CIDR TOKEN\", got %d fields", path, n, len(fields))
		}
		who, tok := fields[0], fields[1]
		if who == "*" {
			if src.fallback != "" {
				return nil, fmt.Errorf("token file %s line %d: a second \"*\" line", path, n)
			}
			src.fallback = tok
			continue
		}
		p, err := parseIPOrCIDR(who)
		if err != nil {
			return nil, fmt.Errorf("token file %s line %d: %w", path, n, err)
		}
		for _, r := range src.rules {
			if r.prefix == p {
				return nil, fmt.Errorf("token file %s line %d: %s listed twice", path, n, p)
			}
		}
		src.rules = append(src.rules, fileRule{p, tok})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	if len(src.rules) == 0 && src.fallback == "" {
		return nil, fmt.Errorf("token file %s: no tokens in it", path)
	}
	// Longest prefix first, so the first match is the most specific.
	slices.SortStableFunc(src.rules, func(a, b fileRule) int { return b.prefix.Bits() - a.prefix.Bits() })
	return src, nil
}

func parseIPOrCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad CIDR %q: %w", s, err)
		}
		return unmapPrefix(p.Masked()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad IP %q: %w", s, err)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad IP %q: a zone never matches a client", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmapPrefix turns a masked IPv4-mapped prefix (::ffff:10.0.0.0/104) into the
// IPv4 prefix it covers (10.0.0.0/8). Masking keeps the ::ffff: part intact
// only for 96 bits or more, so a shorter mapped prefix cannot occur here.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

func (f *file) Token(_ context.Context, clientAddr net.Addr) (string, error) {
	if ip, ok := clientIP(clientAddr); ok {
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			for _, r := range f.rules {
				if r.prefix.Contains(a) {
					return r.token, nil
				}
			}
		}
	}
	if f.fallback != "" {
		return f.fallback, nil
	}
	return "", fmt.Errorf("token file %s has no line for client %v and no \"*\" line", f.path, clientAddr)
}
