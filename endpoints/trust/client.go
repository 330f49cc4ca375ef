package trust

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/quictun/quictun/codecs/preamble"
)

// ClientOptions says how the client verifies the server and who it is.
type ClientOptions struct {
	// Endpoint is the server's "host:port" as the user wrote it: the key in the
	// known-hosts file and, unless ServerName is set, the name checked against
	// a CA-signed certificate.
	Endpoint   string
	ServerName string
	// CAFile verifies the server's chain. Fingerprint pins the server's
	// certificate. With neither, KnownHosts is used: trust on first use.
	CAFile      string
	Fingerprint string
	KnownHosts  string
	// InsecureSkipVerify accepts any server. For tests only.
	InsecureSkipVerify bool
	// RequireVerified (--verify-remote-endpoint) insists that the server be
	// verified before the first session: by CAFile or a pinned Fingerprint.
	// Trust on first use and InsecureSkipVerify are refused at start.
	RequireVerified bool
	// CertFile and KeyFile are the client's own pair for mutual TLS.
	CertFile, KeyFile string
}

// Mode names how the server is verified, for the start-up log.
func (o ClientOptions) Mode() string {
	switch {
	case o.InsecureSkipVerify:
		return "none (insecure)"
	case o.Fingerprint != "" && o.CAFile != "":
		return "ca+pinned-fingerprint"
	case o.Fingerprint != "":
		return "pinned-fingerprint"
	case o.CAFile != "":
		return "ca"
	default:
		return "trust-on-first-use"
	}
}

// LoadClient builds the client's TLS config. An error in an option's value is
// an *OptionError naming that option.
func LoadClient(o ClientOptions, log *slog.Logger) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(o.Endpoint)
	if err != nil {
		return nil, optionErr("server-endpoint", "%q: %w", o.Endpoint, err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{preamble.ALPN},
		ServerName: o.ServerName,
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if o.CertFile != "" || o.KeyFile != "" {
		pair, err := loadKeyPair(o.CertFile, o.KeyFile, log)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if o.RequireVerified {
		if o.InsecureSkipVerify {
			return nil, optionErr("verify-remote-endpoint", "contradicts --insecure-skip-verify: choose one")
		}
		if o.CAFile == "" && o.Fingerprint == "" {
			return nil, optionErr("verify-remote-endpoint", "needs --ca-file or --server-fingerprint: "+
				"trust on first use (--known-hosts) accepts whichever server answers first")
		}
	}
	if o.InsecureSkipVerify {
		if o.CAFile != "" || o.Fingerprint != "" {
			return nil, optionErr("insecure-skip-verify", "contradicts --ca-file and --server-fingerprint: choose one")
		}
		log.Warn("INSECURE: --insecure-skip-verify accepts any server; anyone on the path can read and change the tunnels")
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	var pin string
	if o.Fingerprint != "" {
		if pin, err = ParseFingerprint(o.Fingerprint); err != nil {
			return nil, &OptionError{Option: "server-fingerprint", Err: err}
		}
	}
	if o.CAFile != "" {
		if cfg.RootCAs, err = loadCAs("ca-file", o.CAFile); err != nil {
			return nil, err
		}
		if pin != "" {
			cfg.VerifyConnection = verifyPin(pin)
		}
		return cfg, nil
	}
	// No CA: the chain is not what is trusted, the key is. Go's verification is
	// off and VerifyConnection does all of it.
	cfg.InsecureSkipVerify = true
	if pin != "" {
		cfg.VerifyConnection = verifyPin(pin)
		return cfg, nil
	}
	if o.KnownHosts == "" {
		return nil, optionErr("known-hosts", "empty: no way to verify the server; give --ca-file, --server-fingerprint or --known-hosts")
	}
	kh := &knownHosts{path: o.KnownHosts, endpoint: hostKey(o.Endpoint), log: log}
	// A damaged file shows now, not at every dial.
	if _, _, err := kh.lookup(); err != nil {
		return nil, &OptionError{Option: "known-hosts", Err: err}
	}
	warnLooseKnownHosts(log, o.KnownHosts)
	cfg.VerifyConnection = kh.verify
	return cfg, nil
}

func leafFingerprint(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("server sent no certificate")
	}
	return Fingerprint(cs.PeerCertificates[0]), nil
}

func verifyPin(pin string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		got, err := leafFingerprint(cs)
		if err != nil {
			return err
		}
		if got != pin {
			return fmt.Errorf("server certificate %s does not match the pinned fingerprint %s", got, pin)
		}
		return nil
	}
}

// knownHosts is trust on first use: the first fingerprint seen for an endpoint
// is written down and every later one must match it.
type knownHosts struct {
	path     string
	endpoint string
	log      *slog.Logger
	mu       sync.Mutex
}

func (k *knownHosts) verify(cs tls.ConnectionState) error {
	got, err := leafFingerprint(cs)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	want, line, err := k.lookup()
	if err != nil {
		return err
	}
	switch {
	case want == got:
		return nil
	case want != "":
		return fmt.Errorf("SERVER KEY CHANGED for %s: known as %s (%s line %d), now %s; "+
			"this may be an attack; if the server's key was really replaced, delete that line",
			k.endpoint, want, k.path, line, got)
	}
	if err := k.add(got); err != nil {
		return err
	}
	k.log.Warn("trusting the server on first use; its fingerprint is recorded, compare it with the server's log",
		"endpoint", k.endpoint, "fingerprint", got, "known_hosts", k.path)
	return nil
}

// maxKnownHostsLines bounds the known-hosts file, as a mistaken path (a log, a
// disk image) must fail fast; bufio.Scanner bounds each line.
const maxKnownHostsLines = 100000

func (k *knownHosts) lookup() (fingerprint string, line int, err error) {
	f, err := os.Open(k.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("known hosts: %w", err)
	}
	defer f.Close()
	return parseKnownHosts(f, k.path, k.endpoint)
}

// parseKnownHosts reads lines "HOST:PORT sha256:HEX" (and # comments), checks
// every one, and returns the fingerprint recorded for endpoint (a hostKey) and
// its line, or "" when there is none. path names the file in errors.
func parseKnownHosts(r io.Reader, path, endpoint string) (fingerprint string, line int, err error) {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		if n > maxKnownHostsLines {
			return "", 0, fmt.Errorf("known hosts %s: more than %d lines", path, maxKnownHostsLines)
		}
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) != 2 {
			return "", 0, fmt.Errorf("known hosts %s line %d: want \"HOST:PORT sha256:HEX\"", path, n)
		}
		fp, err := ParseFingerprint(fields[1])
		if err != nil {
			return "", 0, fmt.Errorf("known hosts %s line %d: %w", path, n, err)
		}
		if hostKey(fields[0]) == endpoint && fingerprint == "" {
			fingerprint, line = fp, n
		}
	}
	if err := sc.Err(); err != nil {
		return "", 0, fmt.Errorf("known hosts %s: %w", path, err)
	}
	return fingerprint, line, nil
}

// hostKey is the form of "HOST:PORT" that known hosts are recorded and
// looked up under: one server has one key however its name is spelt. DNS
// names are not case sensitive and a final dot changes nothing, so
// Example.COM.:7500 is example.com:7500; an IP address is in its canonical
// form ([0:0::1] is [::1], ::ffff:10.0.0.1 is 10.0.0.1). A spelling that is
// not HOST:PORT is kept as it is.
func hostKey(endpoint string) string {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return endpoint
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	} else {
		host = strings.TrimSuffix(strings.ToLower(host), ".")
	}
	return net.JoinHostPort(host, port)
}

func (k *knownHosts) add(fp string) error {
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	f, err := os.OpenFile(k.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", k.endpoint, fp); err != nil {
		f.Close()
		return fmt.Errorf("known hosts: %w", err)
	}
	return f.Close()
}

// PeerIdentity names the client of a mutual-TLS session for logs: the subject
// of its certificate, or "" without one.
func PeerIdentity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	c := cs.PeerCertificates[0]
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}
