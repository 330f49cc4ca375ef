// Package identity is who the server knows: per-client secrets and
// mutual-TLS certificates, each mapped to a name with its own target rules
// and quotas, read from an identities file that SIGHUP re-reads.
//
// The file has one identity per line, '#' starts a comment:
//
//	# NAME  SECRET  [OPTION=VALUE ...]
//	alice   Zm9vYmFyYmF6cXV4cXV1eA  allow=10.0.0.5:22,10.0.0.6:5432 max-sessions=2
//	bob     -  cert=bob.example.com deny=10.0.0.9:*  max-tunnels=64
//
// SECRET "-" means none: the client proves itself with its certificate
// (cert= names its subject's common name or a DNS or e-mail SAN). Options:
// allow= and deny= (comma-separated rules of the server's --allow syntax,
// layered over the server's rules), bind= (where this identity's reverse
// forwards may have the server listen, policy.ParseBind's syntax; it
// replaces the server's --allow-bind for this identity), cert=,
// max-sessions=, max-tunnels=.
package identity

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/policy"
)

// Shared is the name of the identity of the single --secret; Anonymous is
// the identity of every session of a server that authenticates nobody (no
// name in a file can be either).
const (
	Shared    = ""
	Anonymous = "*"
)

// MinSecretLen is the length under which a secret draws a warning: 16
// random bytes, or a 22-character base64 string, resist offline guessing.
const MinSecretLen = 16

// Identity is one client the server knows.
type Identity struct {
	Name   string
	Secret []byte   // nil: certificate only
	Certs  []string // certificate names that map to it
	// Rules layer over the server's (policy.Policy.With); nil adds none.
	Rules       *policy.Rules
	allow, deny []string
	// Bind, when set, is where its reverse forwards may listen, instead of
	// the server's --allow-bind.
	Bind  *policy.BindRules
	binds []string
	// MaxSessions and MaxTunnels bound its sessions and tunnels at once, over
	// all its sessions; 0 is no bound of its own.
	MaxSessions, MaxTunnels int
}

// Display is the name logs, metrics and /tunnels show.
func (id *Identity) Display() string {
	if id == nil || id.Name == Anonymous {
		return ""
	}
	if id.Name == Shared {
		return "shared"
	}
	return id.Name
}

// SameCredentials says whether b admits exactly the sessions a admitted, with
// the same rights: a reload that changes neither leaves its sessions alone.
func SameCredentials(a, b *Identity) bool {
	return a != nil && b != nil && a.Name == b.Name && bytes.Equal(a.Secret, b.Secret) &&
		slices.Equal(a.Certs, b.Certs) && slices.Equal(a.allow, b.allow) && slices.Equal(a.deny, b.deny) && slices.Equal(a.binds, b.binds) &&
		a.MaxSessions == b.MaxSessions && a.MaxTunnels == b.MaxTunnels
}

// Table is the server's identities; it is immutable once made, and a reload
// makes a new one.
type Table struct {
	byName map[string]*Identity
	byCert map[string]*Identity
}

// NewTable is a table holding only the shared secret's identity, or nothing
// when shared is empty.
func NewTable(shared []byte) *Table {
	t := &Table{byName: map[string]*Identity{}, byCert: map[string]*Identity{}}
	if len(shared) > 0 {
		t.byName[Shared] = &Identity{Name: Shared, Secret: shared}
	}
	return t
}

// Lookup is the identity a hello names, nil when there is none.
func (t *Table) Lookup(name string) *Identity { return t.byName[name] }

// ForCert is the identity a verified client certificate maps to, nil when
// none does. The subject's common name is tried first, then its SANs.
func (t *Table) ForCert(cs tls.ConnectionState) *Identity {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	c := cs.PeerCertificates[0]
	for _, n := range append(append([]string{c.Subject.CommonName}, c.DNSNames...), c.EmailAddresses...) {
		if id := t.byCert[strings.ToLower(n)]; id != nil && n != "" {
			return id
		}
	}
	return nil
}

// HasSecrets says whether any identity proves itself with a secret.
func (t *Table) HasSecrets() bool {
	for _, id := range t.byName {
		if id.Secret != nil {
			return true
		}
	}
	return false
}

// Len is the number of identities.
func (t *Table) Len() int { return len(t.byName) }

// Names lists the identities' names, sorted.
func (t *Table) Names() []string {
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// LineError is a line of an identities file that does not parse. It never
// holds the secret.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// maxFileSize bounds what Load reads.
const maxFileSize = 4 << 20

// Load reads an identities file into a table that also holds the shared
// secret's identity (when shared is set). Warnings name what is legal but
// unwise: a file others may read, short secrets.
func Load(path string, shared []byte) (t *Table, warnings []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("identities: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("identities: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("identities: %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		warnings = append(warnings, fmt.Sprintf("identities file %s is accessible to other users (mode %v); chmod 600 it", path, fi.Mode().Perm()))
	}
	t, more, err := Parse(io.LimitReader(f, maxFileSize+1), path, shared)
	return t, append(warnings, more...), err
}

// Parse reads identities from r; file names it in errors.
func Parse(r io.Reader, file string, shared []byte) (*Table, []string, error) {
	t := NewTable(shared)
	var warnings []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line, size := 0, 0
	for sc.Scan() {
		line++
		size += len(sc.Bytes()) + 1
		if size > maxFileSize {
			return nil, nil, fmt.Errorf("identities: %s is larger than %d bytes", file, maxFileSize)
		}
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		id, err := parseLine(fields)
		if err != nil {
			return nil, nil, &LineError{File: file, Line: line, Err: err}
		}
		if t.byName[id.Name] != nil {
			return nil, nil, &LineError{File: file, Line: line, Err: fmt.Errorf("identity %q given twice", id.Name)}
		}
		for _, c := range id.Certs {
			if other := t.byCert[c]; other != nil {
				return nil, nil, &LineError{File: file, Line: line, Err: fmt.Errorf("certificate name %q maps to %q already", c, other.Name)}
			}
			t.byCert[c] = id
		}
		if id.Secret != nil && len(id.Secret) < MinSecretLen {
			warnings = append(warnings, fmt.Sprintf("%s:%d: the secret of %q is shorter than %d bytes: easy to guess offline", file, line, id.Name, MinSecretLen))
		}
		t.byName[id.Name] = id
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("identities: %s:%d: %w", file, line+1, err)
	}
	return t, warnings, nil
}

// parseLine reads "NAME SECRET [OPTION=VALUE ...]". Its errors never quote
// the secret.
func parseLine(fields []string) (*Identity, error) {
	if len(fields) < 2 {
		return nil, errors.New("want NAME SECRET [OPTION=VALUE ...] (SECRET - for a certificate only)")
	}
	id := &Identity{Name: fields[0]}
	if err := ValidName(id.Name); err != nil {
		return nil, err
	}
	if fields[1] != "-" {
		if len(fields[1]) > preamble.MaxSecretLen {
			return nil, fmt.Errorf("the secret of %q is longer than %d bytes", id.Name, preamble.MaxSecretLen)
		}
		id.Secret = []byte(fields[1])
	}
	for _, opt := range fields[2:] {
		key, value, ok := strings.Cut(opt, "=")
		if !ok || value == "" {
			return nil, fmt.Errorf("option %q: want OPTION=VALUE", opt)
		}
		switch key {
		case "allow":
			id.allow = append(id.allow, strings.Split(value, ",")...)
		case "deny":
			id.deny = append(id.deny, strings.Split(value, ",")...)
		case "bind":
			id.binds = append(id.binds, strings.Split(value, ",")...)
		case "cert":
			for _, c := range strings.Split(value, ",") {
				id.Certs = append(id.Certs, strings.ToLower(c))
			}
		case "max-sessions", "max-tunnels":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("option %s: want a positive number, got %q", key, value)
			}
			if key == "max-sessions" {
				id.MaxSessions = n
			} else {
				id.MaxTunnels = n
			}
		default:
			return nil, fmt.Errorf("unknown option %q (want allow, deny, bind, cert, max-sessions or max-tunnels)", key)
		}
	}
	if id.Secret == nil && len(id.Certs) == 0 {
		return nil, fmt.Errorf("identity %q has neither a secret nor a cert= name: nobody could prove it", id.Name)
	}
	rules, err := policy.Parse(id.allow, id.deny)
	if err != nil {
		return nil, fmt.Errorf("identity %q: %w", id.Name, err)
	}
	id.Rules = rules
	if id.Bind, err = policy.ParseBind(id.binds); err != nil {
		return nil, fmt.Errorf("identity %q: %w", id.Name, err)
	}
	return id, nil
}

// ValidName checks an identity's name: what a client gives as --identity
// and what logs and metrics print.
func ValidName(name string) error {
	if name == "" || len(name) > preamble.MaxIdentityLen {
		return fmt.Errorf("identity name %q: want 1 to %d characters", name, preamble.MaxIdentityLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r)) {
			return fmt.Errorf("identity name %q: only letters, digits and . _ @ - are allowed", name)
		}
	}
	return nil
}
