package socks

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// conn is a client's bytes in and the server's replies out.
type conn struct {
	io.Reader
	out bytes.Buffer
}

func (c *conn) Write(p []byte) (int, error) { return c.out.Write(p) }

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	noAuth   = []byte{5, 1, 0}
	userPass = []byte{5, 1, 2}
)

func connect(atyp byte, addr []byte, port uint16) []byte {
	b := []byte{5, CmdConnect, 0, atyp}
	if atyp == AtypDomain {
		b = append(b, byte(len(addr)))
	}
	b = append(b, addr...)
	return append(b, byte(port>>8), byte(port))
}

func auth(user, pass string) []byte {
	return join([]byte{1, byte(len(user))}, []byte(user), []byte{byte(len(pass))}, []byte(pass))
}

func TestHandshake(t *testing.T) {
	creds := Credentials{Username: "alice", Password: "s3cret"}
	for _, c := range []struct {
		name      string
		in        []byte
		creds     Credentials
		cmd       byte // the request's command when it succeeds; 0 is CONNECT
		target    string
		reply     []byte // what the server wrote
		wantReply Reply  // the error's reply, when it fails
		wantErr   string
	}{
		{name: "ipv4", in: join(noAuth, connect(AtypIPv4, []byte{10, 0, 0, 5}, 22)), target: "10.0.0.5:22", reply: []byte{5, 0}},
		{name: "ipv6", in: join(noAuth, connect(AtypIPv6, netip.MustParseAddr("2001:db8::1").AsSlice(), 443)), target: "[2001:db8::1]:443", reply: []byte{5, 0}},
		{name: "domain", in: join(noAuth, connect(AtypDomain, []byte("intranet.example"), 80)), target: "intranet.example:80", reply: []byte{5, 0}},
		{name: "ip as a name", in: join(noAuth, connect(AtypDomain, []byte("::1"), 80)), target: "[::1]:80", reply: []byte{5, 0}},
		{name: "several methods", in: join([]byte{5, 3, 0x80, 2, 0}, connect(AtypIPv4, []byte{1, 2, 3, 4}, 1)), target: "1.2.3.4:1", reply: []byte{5, 0}},
		{name: "user/pass", in: join(userPass, auth("alice", "s3cret"), connect(AtypIPv4, []byte{10, 0, 0, 5}, 22)), creds: creds, target: "10.0.0.5:22", reply: []byte{5, 2, 1, 0}},
		{name: "wrong password", in: join(userPass, auth("alice", "guess"), connect(AtypIPv4, []byte{10, 0, 0, 5}, 22)), creds: creds, reply: []byte{5, 2, 1, 1}, wantReply: NotAllowed, wantErr: "wrong username"},
		{name: "no auth offered when required", in: join(noAuth), creds: creds, reply: []byte{5, 0xff}, wantReply: GeneralFailure, wantErr: "no acceptable"},
		{name: "only auth offered when none", in: join(userPass), reply: []byte{5, 0xff}, wantReply: GeneralFailure, wantErr: "no acceptable"},
		{name: "bind", in: join(noAuth, []byte{5, CmdBind, 0, AtypIPv4, 1, 2, 3, 4, 0, 1}), reply: join([]byte{5, 0}, AppendReply(nil, CommandNotSupported, netip.AddrPort{})), wantReply: CommandNotSupported, wantErr: "command 2"},
		{name: "udp associate", in: join(noAuth, []byte{5, CmdUDPAssociate, 0, AtypIPv4, 0, 0, 0, 0, 0, 0}), cmd: CmdUDPAssociate, target: "0.0.0.0:0", reply: []byte{5, 0}},
		{name: "udp associate from a port", in: join(noAuth, []byte{5, CmdUDPAssociate, 0, AtypIPv4, 127, 0, 0, 1, 0x13, 0x88}), cmd: CmdUDPAssociate, target: "127.0.0.1:5000", reply: []byte{5, 0}},
		{name: "command 9", in: join(noAuth, []byte{5, 9, 0, AtypIPv4, 1, 2, 3, 4, 0, 1}), reply: join([]byte{5, 0}, AppendReply(nil, CommandNotSupported, netip.AddrPort{})), wantReply: CommandNotSupported, wantErr: "command 9"},
		{name: "address type 9", in: join(noAuth, []byte{5, 1, 0, 9, 1, 2}), reply: join([]byte{5, 0}, AppendReply(nil, AddressTypeNotSupported, netip.AddrPort{})), wantReply: AddressTypeNotSupported, wantErr: "address type 9"},
		{name: "name with a slash", in: join(noAuth, connect(AtypDomain, []byte("a/b"), 80)), reply: join([]byte{5, 0}, AppendReply(nil, HostUnreachable, netip.AddrPort{})), wantReply: HostUnreachable, wantErr: "host name"},
		{name: "name with a colon", in: join(noAuth, connect(AtypDomain, []byte("a:22"), 80)), reply: join([]byte{5, 0}, AppendReply(nil, HostUnreachable, netip.AddrPort{})), wantReply: HostUnreachable, wantErr: "host name"},
		{name: "address with a zone", in: join(noAuth, connect(AtypDomain, []byte("fe80::1%eth0"), 80)), reply: join([]byte{5, 0}, AppendReply(nil, HostUnreachable, netip.AddrPort{})), wantReply: HostUnreachable, wantErr: "zone"},
		{name: "empty name", in: join(noAuth, connect(AtypDomain, nil, 80)), reply: join([]byte{5, 0}, AppendReply(nil, HostUnreachable, netip.AddrPort{})), wantReply: HostUnreachable, wantErr: "empty host"},
		{name: "socks4", in: []byte{4, 1, 0, 80, 1, 2, 3, 4, 0}, wantErr: "version 4"},
		{name: "http", in: []byte("CONNECT a:1 HTTP/1.1\r\n\r\n"), wantErr: "version 67"},
		{name: "no methods", in: []byte{5, 0}, wantErr: "no method"},
		{name: "cut in the methods", in: []byte{5, 3, 0}, wantErr: "EOF"},
		{name: "cut in the request", in: join(noAuth, []byte{5, 1, 0, AtypIPv6, 1, 2, 3}), reply: []byte{5, 0}, wantErr: "EOF"},
		{name: "cut in the name", in: join(noAuth, []byte{5, 1, 0, AtypDomain, 10, 'a'}), reply: []byte{5, 0}, wantErr: "EOF"},
		{name: "empty", in: nil, wantErr: "EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rw := &conn{Reader: bytes.NewReader(c.in)}
			req, err := Handshake(rw, c.creds)
			if c.cmd == 0 {
				c.cmd = CmdConnect
			}
			if c.wantErr == "" {
				if err != nil || req.Target() != c.target || req.Command != c.cmd {
					t.Fatalf("got %+v (%s), %v; want %s", req, req.Target(), err, c.target)
				}
			} else {
				var se *Error
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				if errors.As(err, &se) && se.Reply != c.wantReply {
					t.Errorf("reply %v, want %v", se.Reply, c.wantReply)
				}
			}
			if !bytes.Equal(rw.out.Bytes(), c.reply) {
				t.Errorf("server wrote %x, want %x", rw.out.Bytes(), c.reply)
			}
		})
	}
}

func TestAppendReply(t *testing.T) {
	if got := AppendReply(nil, Succeeded, netip.AddrPort{}); !bytes.Equal(got, []byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("zero: %x", got)
	}
	if got := AppendReply(nil, NotAllowed, netip.MustParseAddrPort("[::1]:258")); !bytes.Equal(got, join([]byte{5, 2, 0, 4}, netip.IPv6Loopback().AsSlice(), []byte{1, 2})) {
		t.Errorf("ipv6: %x", got)
	}
	if NotAllowed.String() != "not allowed by ruleset" || Reply(99).String() != "reply 99" {
		t.Error("names")
	}
}

// FuzzHandshake: any bytes end in a request or an error, never a panic; a
// request is always a CONNECT or a UDP ASSOCIATE whose target parses back to host and port, and
// the server never writes more than the replies of one handshake.
func FuzzHandshake(f *testing.F) {
	f.Add(join(noAuth, connect(AtypIPv4, []byte{10, 0, 0, 5}, 22)), false)
	f.Add(join(noAuth, connect(AtypDomain, []byte("example.com"), 443)), false)
	f.Add(join(userPass, auth("alice", "s3cret"), connect(AtypIPv6, make([]byte, 16), 1)), true)
	f.Add([]byte{5, 1, 0, 5, 2, 0, 1}, false)
	f.Fuzz(func(t *testing.T, in []byte, withAuth bool) {
		var creds Credentials
		if withAuth {
			creds = Credentials{Username: "alice", Password: "s3cret"}
		}
		rw := &conn{Reader: bytes.NewReader(in)}
		req, err := Handshake(rw, creds)
		if rw.out.Len() > 2+2+10 {
			t.Fatalf("wrote %d bytes", rw.out.Len())
		}
		if err != nil {
			return
		}
		if req.Command != CmdConnect && req.Command != CmdUDPAssociate || req.Host == "" {
			t.Fatalf("accepted %+v", req)
		}
		if strings.ContainsAny(req.Host, " /\\\x00") {
			t.Fatalf("host %q would not travel as an address", req.Host)
		}
	})
}
