// Package socks is the server side of SOCKS version 5 (RFC 1928) with
// username/password authentication (RFC 1929), as far as a tunnel needs it:
// the CONNECT command to an IPv4 address, an IPv6 address or a host name,
// which the far side resolves (as ssh -D does), and UDP ASSOCIATE with the
// header of its relayed datagrams (udp.go). Every field is read with its
// stated length, so a request holds at most a few hundred bytes; anything
// else gets the reply the RFC gives it and an error.
package socks

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Version is the SOCKS version this package speaks.
const Version = 5

// Authentication methods (RFC 1928 section 3).
const (
	MethodNoAuth       byte = 0x00
	MethodUserPass     byte = 0x02
	MethodNoAcceptable byte = 0xff
)

// Commands (RFC 1928 section 4).
const (
	CmdConnect      byte = 0x01
	CmdBind         byte = 0x02
	CmdUDPAssociate byte = 0x03
)

// Address types.
const (
	AtypIPv4   byte = 0x01
	AtypDomain byte = 0x03
	AtypIPv6   byte = 0x04
)

// Reply is the REP field of a reply (RFC 1928 section 6).
type Reply byte

const (
	Succeeded               Reply = 0x00
	GeneralFailure          Reply = 0x01
	NotAllowed              Reply = 0x02 // connection not allowed by ruleset
	NetworkUnreachable      Reply = 0x03
	HostUnreachable         Reply = 0x04
	ConnectionRefused       Reply = 0x05
	TTLExpired              Reply = 0x06
	CommandNotSupported     Reply = 0x07
	AddressTypeNotSupported Reply = 0x08
)

func (r Reply) String() string {
	names := [...]string{"succeeded", "general failure", "not allowed by ruleset", "network unreachable",
		"host unreachable", "connection refused", "TTL expired", "command not supported", "address type not supported"}
	if int(r) < len(names) {
		return names[r]
	}
	return "reply " + strconv.Itoa(int(r))
}

// Error is a handshake that failed. Reply, when not Succeeded, is the reply
// the client was sent (or, for ReadRequest, should be sent) for it.
type Error struct {
	Reply Reply
	Msg   string
}

func (e *Error) Error() string { return "socks5: " + e.Msg }

func fail(reply Reply, format string, args ...any) error {
	return &Error{Reply: reply, Msg: fmt.Sprintf(format, args...)}
}

// Request is a client's request: its command and target.
type Request struct {
	Command byte
	// Host is an IP address in text form or a host name, as the client sent
	// it (a name is not resolved here).
	Host string
	Port uint16
}

// Target is the request's HOST:PORT, IPv6 in brackets.
func (r Request) Target() string { return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port))) }

// Credentials are what clients must present; zero means no authentication.
type Credentials struct{ Username, Password string }

func (c Credentials) required() bool { return c.Username != "" || c.Password != "" }

// Handshake runs the server side up to the request: it reads the client's
// methods, picks one (username/password when creds are set, else none),
// checks the credentials, and reads the request. It writes every reply of
// that exchange itself, including the error reply of a request it refuses
// (BIND, an unknown address type); the reply to a
// good request is the caller's, once it knows whether the target can be
// reached (see AppendReply).
func Handshake(rw io.ReadWriter, creds Credentials) (Request, error) {
	methods, err := ReadGreeting(rw)
	if err != nil {
		return Request{}, err
	}
	want := MethodNoAuth
	if creds.required() {
		want = MethodUserPass
	}
	if !containsByte(methods, want) {
		_, _ = rw.Write([]byte{Version, MethodNoAcceptable})
		return Request{}, fail(GeneralFailure, "no acceptable authentication method (offered %x, need %#x)", methods, want)
	}
	if _, err := rw.Write([]byte{Version, want}); err != nil {
		return Request{}, err
	}
	if want == MethodUserPass {
		user, pass, err := ReadUserPass(rw)
		if err != nil {
			return Request{}, err
		}
		// Hashes compared in constant time, both, so the answer's timing tells
		// neither content nor length.
		ok := equal(user, creds.Username) & equal(pass, creds.Password)
		status := byte(0x01)
		if ok == 1 {
			status = 0x00
		}
		if _, err := rw.Write([]byte{0x01, status}); err != nil {
			return Request{}, err
		}
		if ok != 1 {
			return Request{}, fail(NotAllowed, "wrong username or password")
		}
	}
	req, err := ReadRequest(rw)
	if err != nil {
		var se *Error
		if errors.As(err, &se) && se.Reply != Succeeded {
			_, _ = rw.Write(AppendReply(nil, se.Reply, netip.AddrPort{}))
		}
		return Request{}, err
	}
	return req, nil
}

func equal(a, b string) int {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:])
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// ReadGreeting reads the version/methods message and returns the methods.
func ReadGreeting(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("socks5: read greeting: %w", err)
	}
	if hdr[0] != Version {
		return nil, fail(Succeeded, "version %d, not 5 (SOCKS4 and HTTP are not spoken here)", hdr[0])
	}
	if hdr[1] == 0 {
		return nil, fail(Succeeded, "greeting offers no method")
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, fmt.Errorf("socks5: read methods: %w", err)
	}
	return methods, nil
}

// ReadUserPass reads an RFC 1929 username/password request.
func ReadUserPass(r io.Reader) (user, pass string, err error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", "", fmt.Errorf("socks5: read auth: %w", err)
	}
	if b[0] != 0x01 {
		return "", "", fail(Succeeded, "username/password version %d, not 1", b[0])
	}
	field := func() (string, error) {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", err
		}
		buf := make([]byte, b[0])
		_, err := io.ReadFull(r, buf)
		return string(buf), err
	}
	if user, err = field(); err != nil {
		return "", "", fmt.Errorf("socks5: read username: %w", err)
	}
	if pass, err = field(); err != nil {
		return "", "", fmt.Errorf("socks5: read password: %w", err)
	}
	return user, pass, nil
}

// ReadRequest reads a request: CONNECT, or UDP ASSOCIATE, whose address is
// where the client means to send its datagrams from (zeros when it does not
// know). A well-formed request that this package does not serve (BIND, an
// unknown address type, a bad host name) is an *Error with the reply to send.
func ReadRequest(r io.Reader) (Request, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Request{}, fmt.Errorf("socks5: read request: %w", err)
	}
	if hdr[0] != Version {
		return Request{}, fail(GeneralFailure, "request version %d, not 5", hdr[0])
	}
	req := Request{Command: hdr[1]}
	switch hdr[3] {
	case AtypIPv4, AtypIPv6:
		n := 4
		if hdr[3] == AtypIPv6 {
			n = 16
		}
		ip := make([]byte, n)
		if _, err := io.ReadFull(r, ip); err != nil {
			return Request{}, fmt.Errorf("socks5: read address: %w", err)
		}
		a, _ := netip.AddrFromSlice(ip)
		req.Host = a.String()
	case AtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return Request{}, fmt.Errorf("socks5: read name length: %w", err)
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(r, name); err != nil {
			return Request{}, fmt.Errorf("socks5: read name: %w", err)
		}
		req.Host = string(name)
	default:
		return Request{}, fail(AddressTypeNotSupported, "address type %d", hdr[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return Request{}, fmt.Errorf("socks5: read port: %w", err)
	}
	req.Port = binary.BigEndian.Uint16(port[:])
	if req.Command != CmdConnect && req.Command != CmdUDPAssociate {
		return Request{}, fail(CommandNotSupported, "command %d: only CONNECT and UDP ASSOCIATE are served", req.Command)
	}
	if hdr[3] == AtypDomain {
		if err := checkName(req.Host); err != nil {
			return Request{}, err
		}
	}
	return req, nil
}

// checkName accepts host names as DNS has them (letters, digits, '-', '_',
// dots), and an IP address written as a name, which some clients send: a
// name with other bytes could not travel as an address token unchanged.
func checkName(name string) error {
	if name == "" {
		return fail(HostUnreachable, "empty host name")
	}
	if a, err := netip.ParseAddr(name); err == nil {
		if a.Zone() != "" {
			// A zone names one of this host's interfaces, with any bytes.
			return fail(HostUnreachable, "address %q has a zone", name)
		}
		return nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fail(HostUnreachable, "host name %q has a byte %#x that no host name has", name, c)
		}
	}
	return nil
}

// AppendReply appends a reply with code and the bound address (the zero
// AddrPort sends 0.0.0.0:0, as a tunnel has no local address to show).
func AppendReply(b []byte, code Reply, bound netip.AddrPort) []byte {
	b = append(b, Version, byte(code), 0x00)
	switch a := bound.Addr(); {
	case !a.IsValid():
		b = append(b, AtypIPv4, 0, 0, 0, 0)
	case a.Is4():
		ip := a.As4()
		b = append(append(b, AtypIPv4), ip[:]...)
	default:
		ip := a.As16()
		b = append(append(b, AtypIPv6), ip[:]...)
	}
	return binary.BigEndian.AppendUint16(b, bound.Port())
}
