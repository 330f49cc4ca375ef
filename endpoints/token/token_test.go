package token

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
		if _, err := NewSource(n, "tcp:127.0.0.1:22", SourceOptions{}); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, n := range []string{"Cleartext", "cleartext", "CLEARTEXT"} {
		if _, err := NewParser(n, ""); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if _, err := NewSource("Carrier-Pigeon", "x", SourceOptions{}); err == nil || !strings.Contains(err.Error(), "have File, Fixed, Http") {
		t.Errorf("unknown source: %v", err)
	}
	if _, err := NewParser("Rot13", ""); err == nil || !strings.Contains(err.Error(), "have Cleartext") {
		t.Errorf("unknown parser: %v", err)
	}
	if _, err := NewParser("Cleartext", "rot13"); err == nil {
		t.Error("unknown cleartext key accepted")
	}
	if _, err := NewSource("Fixed", "", SourceOptions{}); err == nil {
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
	src, err := NewSource("File", path, SourceOptions{})
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

// A line written IPv4-mapped matches the IPv4 clients it covers, and clients
// that arrive IPv4-mapped match IPv4 lines: both sides are compared unmapped.
func TestFileSourceUnmapsIPv4MappedLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("::ffff:10.0.0.0/104 tcp:10.9.9.9:22\n::ffff:192.168.1.7 tcp:192.168.1.7:22\n172.16.0.0/12 tcp:172.16.0.1:22\n"), 0o600)
	src, err := NewSource("File", path, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, client := range []net.Addr{
		tcpAddr("10.1.2.3:5000"),
		&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 5000},
		&net.TCPAddr{IP: net.ParseIP("10.1.2.3").To4(), Port: 5000},
	} {
		if got, err := src.Token(context.Background(), client); err != nil || got != "tcp:10.9.9.9:22" {
			t.Errorf("client %v: got %q, %v; want the ::ffff:10.0.0.0/104 line", client, got, err)
		}
	}
	for client, want := range map[string]string{
		"192.168.1.7:1":          "tcp:192.168.1.7:22",
		"[::ffff:172.16.5.5]:1":  "tcp:172.16.0.1:22",
		"[::ffff:192.168.1.7]:1": "tcp:192.168.1.7:22",
	} {
		if got, err := src.Token(context.Background(), tcpAddr(client)); err != nil || got != want {
			t.Errorf("client %s: got %q, %v; want %q", client, got, err, want)
		}
	}
	// The same network written both ways is one network, listed twice.
	os.WriteFile(path, []byte("10.0.0.0/8 a\n::ffff:10.0.0.0/104 b\n"), 0o600)
	if _, err := NewSource("File", path, SourceOptions{}); err == nil || !strings.Contains(err.Error(), "line 2: 10.0.0.0/8 listed twice") {
		t.Errorf("10.0.0.0/8 written twice: %v", err)
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
		"fe80::1%eth0 a\n":          "zone",
	} {
		path := filepath.Join(dir, "t")
		os.WriteFile(path, []byte(body), 0o600)
		if _, err := NewSource("file", path, SourceOptions{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", body, err, want)
		}
	}
	if _, err := NewSource("file", filepath.Join(dir, "missing"), SourceOptions{}); err == nil {
		t.Error("missing file accepted")
	}
	path := filepath.Join(dir, "t")
	os.WriteFile(path, []byte("10.0.0.1 a\n"), 0o600)
	src, _ := NewSource("file", path, SourceOptions{})
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

	src, err := NewSource("Http", srv.URL+"/ok", SourceOptions{})
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
		src, _ := NewSource("http", srv.URL+path, SourceOptions{})
		if _, err := src.Token(context.Background(), tcpAddr("10.0.0.1:1")); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", path, err, want)
		}
	}
	if _, err := NewSource("http", "ftp://x", SourceOptions{}); err == nil {
		t.Error("ftp URL accepted")
	}
	srv.Client().CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// The Http source gives up after its timeout on a service that never answers,
// with an error that says so; zero means DefaultSourceTimeout.
func TestHTTPSourceTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // stall until the client gives up (or the test ends)
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)

	const timeout = 300 * time.Millisecond
	src, err := NewSource("Http", srv.URL, SourceOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = src.Token(context.Background(), tcpAddr("10.0.0.1:1"))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("stalled service: got %v", err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Fatalf("gave up after %v, want about %v", took, timeout)
	}
	// The caller's deadline is reported as the caller's, not as the timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := src.Token(ctx, tcpAddr("10.0.0.1:1")); err == nil || strings.Contains(err.Error(), "no answer within") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller's deadline: got %v", err)
	}

	def, err := NewSource("Http", srv.URL, SourceOptions{})
	if err != nil || def.(*httpSource).timeout != DefaultSourceTimeout || def.(*httpSource).client.Timeout != DefaultSourceTimeout {
		t.Fatalf("zero timeout: %v, %v", def, err)
	}
	if _, err := NewSource("Http", srv.URL, SourceOptions{Timeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("negative timeout: %v", err)
	}
	srv.CloseClientConnections()
	src.(*httpSource).client.CloseIdleConnections()
	def.(*httpSource).client.CloseIdleConnections()
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

// The token file parser takes any bytes without panicking, and what it accepts
// is consistent: masked, unmapped prefixes, most specific first, each line's
// own address picking a line at least as specific.
func FuzzTokenFile(f *testing.F) {
	f.Add([]byte("# c\n10.0.0.0/8 a\n10.0.0.1 b\n* c\n"))
	f.Add([]byte("::ffff:10.0.0.0/104 a\n2001:db8::/32 b\n"))
	f.Add([]byte("fe80::1%eth0 a\n::ffff:1.2.3.4 b\n"))
	f.Add([]byte("* a\n* b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := parseTokenFile("fuzz", bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(src.rules) > maxTokenFileLines {
			t.Fatalf("%d rules", len(src.rules))
		}
		for i, r := range src.rules {
			p := r.prefix
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" || r.token == "" {
				t.Fatalf("rule %d: prefix %v token %q", i, p, r.token)
			}
			if i > 0 && src.rules[i-1].prefix.Bits() < p.Bits() {
				t.Fatalf("rules not most specific first: %v before %v", src.rules[i-1].prefix, p)
			}
			tok, err := src.Token(context.Background(), &net.TCPAddr{IP: p.Addr().AsSlice(), Port: 1})
			if err != nil || tok == "" {
				t.Fatalf("the address of rule %v picks nothing: %v", p, err)
			}
		}
	})
}

// The Http source's answer decoder takes any bytes without panicking and
// returns a token only when there is one.
func FuzzHTTPAnswer(f *testing.F) {
	f.Add([]byte(`{"token": "tcp:127.0.0.1:22"}`))
	f.Add([]byte(`{"token": ""}`))
	f.Add([]byte(`{"token": null, "token": "x"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := decodeAnswer(body)
		if err == nil && tok == "" {
			t.Fatalf("%q decoded to %q", body, tok)
		}
		if err != nil && tok != "" {
			t.Fatalf("error %v with token %q", err, tok)
		}
	})
}
