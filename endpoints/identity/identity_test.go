package identity

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const file = `
# clients of the lab
alice  a-long-enough-secret-1  allow=10.0.0.5:22,10.0.0.6:5432  max-sessions=2 bind=0.0.0.0:2222
bob    -                       cert=Bob.Example.com,bob@example.com  deny=10.0.0.9:*  max-tunnels=64
carol  tiny7
`

func TestParseIdentities(t *testing.T) {
	tab, warnings, err := Parse(strings.NewReader(file), "ids", []byte("the-shared-secret-of-all"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tab.Names(), ","); got != ",alice,bob,carol" {
		t.Fatalf("names %q", got)
	}
	alice := tab.Lookup("alice")
	if string(alice.Secret) != "a-long-enough-secret-1" || alice.MaxSessions != 2 || alice.Rules == nil || alice.Bind.String() != "0.0.0.0:2222" {
		t.Fatalf("alice: %+v", alice)
	}
	if bob := tab.Lookup("bob"); bob.Secret != nil || bob.MaxTunnels != 64 || len(bob.Certs) != 2 {
		t.Fatalf("bob: %+v", bob)
	}
	if shared := tab.Lookup(Shared); shared == nil || shared.Display() != "shared" {
		t.Fatalf("shared secret's identity: %+v", shared)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `"carol"`) || strings.Contains(warnings[0], "tiny7") {
		t.Fatalf("want one short-secret warning for carol, got %q", warnings)
	}
	if !tab.HasSecrets() || NewTable(nil).HasSecrets() || tab.Lookup("mallory") != nil {
		t.Fatal("HasSecrets or Lookup wrong")
	}
}

func TestCertificateNamesMapCaseInsensitively(t *testing.T) {
	tab, _, err := Parse(strings.NewReader(file), "ids", nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(cn string, dns ...string) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}}}
	}
	if id := tab.ForCert(cert("bob.example.COM")); id == nil || id.Name != "bob" {
		t.Fatalf("common name: %v", id)
	}
	if id := tab.ForCert(cert("someone", "bob@example.com")); id == nil || id.Name != "bob" {
		t.Fatalf("SAN: %v", id)
	}
	if tab.ForCert(cert("alice")) != nil || tab.ForCert(tls.ConnectionState{}) != nil {
		t.Fatal("a name no cert= gives mapped to an identity")
	}
}

func TestBadLinesNameTheLineNotTheSecret(t *testing.T) {
	for name, line := range map[string]string{
		"no secret":      "alice",
		"bad name":       "al/ice hunter2-hunter2-hunter2",
		"unknown option": "alice hunter2-hunter2-hunter2 colour=red",
		"bad number":     "alice hunter2-hunter2-hunter2 max-sessions=-1",
		"bad rule":       "alice hunter2-hunter2-hunter2 allow=nowhere",
		"bind host name": "alice hunter2-hunter2-hunter2 bind=example.com:22",
		"nobody proves":  "alice -",
		"twice":          "alice hunter2-hunter2-hunter2\nalice hunter2-hunter2-hunter2",
		"cert twice":     "a - cert=x\nb - cert=X",
	} {
		_, _, err := Parse(strings.NewReader("# header\n"+line), "ids", nil)
		var le *LineError
		if !errors.As(err, &le) || le.Line < 2 {
			t.Errorf("%s: %v, want a LineError naming line 2 or later", name, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error echoes the secret: %v", name, err)
		}
	}
}

func TestLoadWarnsOnAFileOthersCanRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identities")
	if err := os.WriteFile(path, []byte("alice a-long-enough-secret-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, warnings, err := Load(path, nil)
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "chmod 600") {
		t.Fatalf("mode 644: %q, %v", warnings, err)
	}
	os.Chmod(path, 0o600)
	if _, warnings, err = Load(path, nil); err != nil || len(warnings) != 0 {
		t.Fatalf("mode 600: %q, %v", warnings, err)
	}
	if _, _, err := Load(filepath.Dir(path), nil); err == nil {
		t.Fatal("a directory loaded as identities")
	}
}

func TestSameCredentials(t *testing.T) {
	a, _, _ := Parse(strings.NewReader("alice a-long-enough-secret-1 allow=10.0.0.5:22"), "a", nil)
	b, _, _ := Parse(strings.NewReader("alice a-long-enough-secret-1 allow=10.0.0.5:22"), "b", nil)
	c, _, _ := Parse(strings.NewReader("alice a-long-enough-secret-2 allow=10.0.0.5:22"), "c", nil)
	d, _, _ := Parse(strings.NewReader("alice a-long-enough-secret-1 allow=10.0.0.5:23"), "d", nil)
	e, _, _ := Parse(strings.NewReader("alice a-long-enough-secret-1 allow=10.0.0.5:22 bind=0.0.0.0:2222"), "e", nil)
	if SameCredentials(a.Lookup("alice"), e.Lookup("alice")) {
		t.Fatal("a changed bind rule counted as the same")
	}
	if !SameCredentials(a.Lookup("alice"), b.Lookup("alice")) {
		t.Fatal("identical lines differ")
	}
	if SameCredentials(a.Lookup("alice"), c.Lookup("alice")) || SameCredentials(a.Lookup("alice"), d.Lookup("alice")) || SameCredentials(a.Lookup("alice"), nil) {
		t.Fatal("a changed secret or rule counted as the same")
	}
}

// The example file of the README parses, without a warning.
func TestExampleIdentitiesParse(t *testing.T) {
	f, err := os.Open("../../examples/identities")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, warnings, err := Parse(f, "examples/identities", nil)
	if err != nil || len(warnings) != 0 || tab.Len() != 2 {
		t.Fatalf("%v identities, warnings %q, %v", tab, warnings, err)
	}
}

// Whatever an identities file holds, Parse gives a table or an error, and a
// table holds only valid names and the secrets the lines gave.
func FuzzParse(f *testing.F) {
	f.Add(file)
	f.Add("a - cert=x,y allow=10.0.0.0/8:22 deny=unix:/run/*\n")
	f.Add("a b max-sessions=99999999999999999999\n")
	f.Fuzz(func(t *testing.T, text string) {
		tab, _, err := Parse(strings.NewReader(text), "fuzz", nil)
		if err != nil {
			return
		}
		for _, name := range tab.Names() {
			id := tab.Lookup(name)
			if ValidName(name) != nil || (id.Secret == nil && len(id.Certs) == 0) {
				t.Fatalf("accepted %+v", id)
			}
		}
	})
}
