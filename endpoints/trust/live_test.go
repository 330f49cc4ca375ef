package trust

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestLiveConfigServesTheNewestCertificate(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	first, err := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "first")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "second")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var seen string
	client := &tls.Config{
		InsecureSkipVerify: true, // the test reads the certificate it was given
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err == nil {
				seen = Fingerprint(leaf)
			}
			return err
		},
	}
	live := NewLive(first.TLS)
	listening := live.Config()
	for _, want := range []*Server{first, second, first} {
		live.Swap(want.TLS)
		if err, _ := handshake(t, listening, client); err != nil {
			t.Fatal(err)
		}
		if seen != want.Fingerprint {
			t.Fatalf("handshake got %s, want %s", seen, want.Fingerprint)
		}
	}
}
