package token

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/endpoints/address"
)

func tcpAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestPluginNamesAreCaseInsensitive(t *testing.T) {
	for _, n := range []string{"Fixed", "fixed", "FIXED"} {
		if _, err := NewSource(n, "tcp:127.0.0.1:22"); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, n := range []string{"Cleartext", "cleartext", "CLEARTEXT"} {
		if _, err := NewParser(n, ""); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if _, err := NewSource("Carrier-Pigeon", "x"); err == nil || !strings.Contains(err.Error(), "fixed") {
		t.Errorf("unknown source: %v", err)
	}
	if _, err := NewParser("Rot13", ""); err == nil {
		t.Error("unknown parser accepted")
	}
	if _, err := NewParser("Cleartext", "rot13"); err == nil {
		t.Error("unknown cleartext key accepted")
	}
	if _, err := NewSource("Fixed", ""); err == nil {
		t.Error("empty fixed token accepted")
	}
}

func TestFileSourceMatchesByAddressMostSpecificFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte(`# comment
10.0.0.0/8      tcp:10.9.9.9:22
10.0.0.1        tcp:10.0.0.1:22
10.0.0.0/24     tcp:10.0.0.254:22
2001:db8::/32   tcp:[2001:db8::1]:22
*               unix:/run/default.sock
`), 0o600)
	src, err := NewSource("File", path)
	if err != nil {
		t.Fatal(err)
	}
	for client, want := range map[string]string{
		"10.0.0.1:5000":    "tcp:10.0.0.1:22",
		"10.0.0.10:5000":   "tcp:10.0.0.254:22", // not a prefix match of 10.0.0.1
		"10.1.2.3:5000":    "tcp:10.9.9.9:22",
		"[2001:db8::7]:1":  "tcp:[2001:db8::1]:22",
		"192.168.1.1:5000": "unix:/run/default.sock",
	} {
		got, err := src.Token(context.Background(), tcpAddr(client))
		if err != nil || got != want {
			t.Errorf("client %s: got %q, %v; want %q", client, got, err, want)
		}
	}
	// A UNIX-socket client has no IP: only the default line applies.
	got, err := src.Token(context.Background(), &net.UnixAddr{Name: "@", Net: "unix"})
	if err != nil || got != "unix:/run/default.sock" {
		t.Errorf("unix client: got %q, %v", got, err)
	}
}

func TestFileSourceErrorsNameTheLine(t *testing.T) {
	dir := t.TempDir()
	for body, want := range map[string]string{
		"10.0.0.1 a\nnot-an-ip b\n": "line 2",
		"10.0.0.1\n":                "line 1",
		"* a\n* b\n":                "line 2",
		"10.0.0.1 a\n10.0.0.1 b\n":  "line 2",
		"# nothing\n":               "no tokens",
	} {
		path := filepath.Join(dir, "t")
		os.WriteFile(path, []byte(body), 0o600)
		if _, err := NewSource("file", path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", body, err, want)
		}
	}
	if _, err := NewSource("file", filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
	path := filepath.Join(dir, "t")
	os.WriteFile(path, []byte("10.0.0.1 a\n"), 0o600)
	src, _ := NewSource("file", path)
	if _, err := src.Token(context.Background(), tcpAddr("10.0.0.2:1")); err == nil {
		t.Error("no line and no default: want an error")
	}
}

func TestHTTPSource(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"token": "tcp:127.0.0.1:` + r.URL.Query().Get("addr")[len("10.0.0.1:"):] + `"}`))
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		case "/garbage":
			w.Write([]byte(`<html>`))
		case "/empty":
			w.Write([]byte(`{"token": ""}`))
		case "/huge":
			w.Write([]byte(`{"token": "` + strings.Repeat("a", maxHTTPTokenBody) + `"}`))
		}
	}))
	defer srv.Close()
	defer srv.CloseClientConnections()

	src, err := NewSource("Http", srv.URL+"/ok")
	if err != nil {
		t.Fatal(err)
	}
	got, err := src.Token(context.Background(), tcpAddr("10.0.0.1:4242"))
	if err != nil || got != "tcp:127.0.0.1:4242" {
		t.Fatalf("got %q, %v", got, err)
	}
	for path, want := range map[string]string{
		"/teapot": "418", "/garbage": "not {", "/empty": "no token", "/huge": "exceeds",
	} {
		src, _ := NewSource("http", srv.URL+path)
		if _, err := src.Token(context.Background(), tcpAddr("10.0.0.1:1")); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", path, err, want)
		}
	}
	if _, err := NewSource("http", "ftp://x"); err == nil {
		t.Error("ftp URL accepted")
	}
	srv.Client().CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func TestCleartextParser(t *testing.T) {
	plain, _ := NewParser("Cleartext", "")
	b64, _ := NewParser("Cleartext", "base64")
	a, err := plain.Parse([]byte("tcp:[::1]:22"))
	if err != nil || a != (address.Address{Network: "tcp", Addr: "[::1]:22"}) {
		t.Fatalf("plain: %v, %v", a, err)
	}
	for _, enc := range []string{
		base64.StdEncoding.EncodeToString([]byte("unix:/run/a.sock")),
		base64.RawStdEncoding.EncodeToString([]byte("unix:/run/a.sock")),
	} {
		a, err = b64.Parse([]byte(enc))
		if err != nil || a != (address.Address{Network: "unix", Addr: "/run/a.sock"}) {
			t.Fatalf("base64 %q: %v, %v", enc, a, err)
		}
	}
	for _, bad := range []string{"", "nonsense", "tcp:host:99999"} {
		if _, err := plain.Parse([]byte(bad)); err == nil {
			t.Errorf("plain %q accepted", bad)
		}
	}
	if _, err := b64.Parse([]byte("!!!")); err == nil {
		t.Error("bad base64 accepted")
	}
}

func FuzzCleartextParser(f *testing.F) {
	f.Add([]byte("tcp:127.0.0.1:22"), false)
	f.Add([]byte("dW5peDovcnVuL2Euc29jaw=="), true)
	f.Add([]byte("unix:"), false)
	f.Fuzz(func(t *testing.T, tok []byte, b64 bool) {
		key := ""
		if b64 {
			key = "base64"
		}
		p, _ := NewParser("cleartext", key)
		a, err := p.Parse(tok)
		if err != nil {
			return
		}
		if a.Network != address.TCP && a.Network != address.Unix || a.Addr == "" {
			t.Fatalf("parsed %q to a bad address %+v", tok, a)
		}
	})
}
