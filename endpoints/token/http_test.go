package token

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/internal/logtap"
)

// serveOn starts a web service on a loopback address of its own.
func serveOn(t *testing.T, ip string, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// A token service that redirects elsewhere would hand the choice of every
// tunnel's target, and the client addresses, to whoever it points at: only
// redirects on its own host and port are followed, and the foreign service
// never hears of the request.
func TestHTTPSourceRedirectsStayOnTheHost(t *testing.T) {
	// Cleanups run last first: this one after the servers are closed.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var foreignHits atomic.Int32
	foreign := serveOn(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		foreignHits.Add(1)
		w.Write([]byte(`{"token": "tcp:169.254.169.254:80"}`))
	})
	otherPort := serveOn(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		foreignHits.Add(1)
		w.Write([]byte(`{"token": "tcp:169.254.169.254:80"}`))
	})
	var home *httptest.Server
	home = serveOn(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		_, port, _ := net.SplitHostPort(home.Listener.Addr().String())
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"token": "tcp:10.0.0.5:22"}`))
		case "/hop": // relative, on the same host
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/hop-absolute":
			http.Redirect(w, r, "http://127.0.0.1:"+port+"/ok", http.StatusTemporaryRedirect)
		case "/away":
			http.Redirect(w, r, foreign.URL+"/steal", http.StatusFound)
		case "/other-port":
			http.Redirect(w, r, otherPort.URL+"/steal", http.StatusMovedPermanently)
		case "/other-name": // the same machine under another name is another host
			http.Redirect(w, r, "http://localhost:"+port+"/ok", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	})
	ask := func(path string) (string, error) {
		src, err := NewSource("Http", home.URL+path+"?key=k3y", SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.(*httpSource).client.CloseIdleConnections()
		return src.Token(context.Background(), tcpAddr("10.0.0.1:4242"))
	}
	for _, path := range []string{"/hop", "/hop-absolute"} {
		if tok, err := ask(path); err != nil || tok != "tcp:10.0.0.5:22" {
			t.Errorf("%s: %q, %v", path, tok, err)
		}
	}
	for path, want := range map[string]string{
		"/away":       "redirected to " + foreign.URL + "/steal: refused",
		"/other-port": "redirected to " + otherPort.URL + "/steal: refused",
		"/other-name": "redirected to http://localhost:",
		"/loop":       "more than 3 redirects",
	} {
		tok, err := ask(path)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "k3y") {
			t.Errorf("%s: %q, %v; want an error with %q (and no query string)", path, tok, err, want)
		}
	}
	if n := foreignHits.Load(); n != 0 {
		t.Fatalf("the foreign services were asked %d times", n)
	}
}

func TestSameService(t *testing.T) {
	for _, c := range []struct {
		from, to string
		same     bool
	}{
		{"https://tok.example/a", "https://TOK.example./b", true},
		{"https://tok.example/a", "https://tok.example:443/b", true},
		{"http://tok.example/a", "https://tok.example/b", true}, // an upgrade on the default ports
		{"http://tok.example:8080/a", "https://tok.example:8443/b", false},
		{"https://tok.example/a", "http://tok.example/b", false}, // a downgrade
		{"https://tok.example/a", "https://tok.example:8443/b", false},
		{"https://tok.example/a", "https://tok.example.attacker.example/b", false},
		{"https://tok.example/a", "https://evil.example/b", false},
		{"http://127.0.0.1:80/a", "http://[::1]:80/b", false},
	} {
		from, _ := url.Parse(c.from)
		to, _ := url.Parse(c.to)
		if got := sameService(from, to); got != c.same {
			t.Errorf("%s -> %s: same %v, want %v", c.from, c.to, got, c.same)
		}
	}
}

// A cleartext URL beyond loopback is warned about once per source; loopback
// and https:// are not.
func TestHTTPSourceWarnsOnCleartext(t *testing.T) {
	defer goleak.VerifyNone(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel() // no request leaves: the warning comes before it
	for raw, warn := range map[string]bool{
		"http://198.18.0.1:8080/token?key=k3y": true,
		"http://tokens.internal.example/t":     true,
		"http://127.0.0.1:8080/token":          false,
		"http://127.8.9.10/token":              false,
		"http://[::1]:8080/token":              false,
		"http://LocalHost./token":              false,
		"https://198.18.0.1/token":             false,
	} {
		var logs logtap.Tap
		src, err := NewSource("Http", raw, SourceOptions{Logger: logs.Logger(0)})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			src.Token(cancelled, tcpAddr("10.0.0.1:1"))
		}
		lines := logs.Lines("level=WARN", "cleartext http://")
		if warn && len(lines) != 1 || !warn && len(lines) != 0 {
			t.Errorf("%s: %d warnings, want %v once:\n%s", raw, len(lines), warn, logs.String())
		}
		if strings.Contains(logs.String(), "k3y") {
			t.Errorf("%s: the warning shows the query string: %s", raw, logs.String())
		}
	}
}
