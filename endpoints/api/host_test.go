package api

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/quictun/quictun/engine"
)

// callAs sends a request as a browser would: to the API's address, but with
// the Host (and Origin) of the page that made it.
func callAs(t *testing.T, method, url, host, origin, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A DNS-rebinding page reaches the API under a name of its own: without a
// token the API must neither list nor close tunnels for it, while every name
// of the API itself keeps working.
func TestRebindingHostRefusedWithoutToken(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg})
	_, port, _ := strings.Cut(strings.TrimPrefix(base, "http://"), ":")
	_, tun, done := liveTunnel(t, reg, engine.Info{Endpoint: engine.ServerEndpoint, ServerAppAddr: "10.0.0.5:22"})
	id := tun.ID.String()

	for _, host := range []string{
		"rebind.attacker.example:" + port, "rebind.attacker.example", "localhost.attacker.example:" + port,
		"127.0.0.1.nip.io:" + port, "10.0.0.5:" + port, "[fe80::1]:" + port,
	} {
		code, body := callAs(t, "GET", base+"/tunnels", host, "", "")
		if code != 403 || strings.Contains(body, id) {
			t.Errorf("GET /tunnels with Host %q: %d %s, want 403 without the tunnel", host, code, body)
		}
		if code, body := callAs(t, "DELETE", base+"/tunnels/"+id, host, "", ""); code != 403 {
			t.Errorf("DELETE with Host %q: %d %s, want 403", host, code, body)
		}
		if code, _ := callAs(t, "GET", base+"/sessions", host, "", ""); code != 403 && code != 404 {
			t.Errorf("GET /sessions with Host %q: %d", host, code)
		}
	}
	// An absolute request target names a host too, whatever the header says.
	resp, body := rawRequest(t, strings.TrimPrefix(base, "http://"), "",
		"GET http://rebind.attacker.example/tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if resp.StatusCode != 403 || strings.Contains(string(body), id) {
		t.Errorf("absolute target with a foreign host: %d %s", resp.StatusCode, body)
	}
	select {
	case err := <-done:
		t.Fatalf("a foreign Host closed the tunnel: %v", err)
	default:
	}

	for _, host := range []string{"localhost:" + port, "LocalHost:" + port, "localhost.:" + port, "localhost",
		"127.0.0.1:" + port, "127.9.9.9:" + port, "[::1]:" + port, "[::ffff:127.0.0.1]:" + port} {
		if code, body := callAs(t, "GET", base+"/tunnels", host, "", ""); code != 200 || !strings.Contains(body, id) {
			t.Errorf("GET /tunnels with Host %q: %d %s, want the tunnel", host, code, body)
		}
	}
	// Probes keep /healthz under any name, as with a token.
	if code, _ := callAs(t, "GET", base+"/healthz", "quictun.svc.cluster.local", "", ""); code != 200 {
		t.Errorf("healthz under a service name: %d", code)
	}
}

// With a token the name does not matter: a rebinding page cannot know it.
func TestForeignHostServedWithToken(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg, Token: "s3cret"})
	if code, body := callAs(t, "GET", base+"/tunnels", "quictun.example.net:8080", "", "s3cret"); code != 200 {
		t.Fatalf("foreign Host with the token: %d %s", code, body)
	}
	if code, _ := callAs(t, "GET", base+"/tunnels", "quictun.example.net:8080", "", ""); code != 401 {
		t.Fatalf("foreign Host without the token: %d, want 401", code)
	}
}

// A cross-site page that gets a DELETE sent (an old browser, a plugin, a
// preflight some proxy answered) is refused by its Origin, token or not.
func TestCrossSiteDeleteRefused(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		reg := engine.NewRegistry(engine.Config{})
		base := startAPI(t, Options{Registry: reg, Token: token})
		host := strings.TrimPrefix(base, "http://")
		_, tun, done := liveTunnel(t, reg, engine.Info{Endpoint: engine.ServerEndpoint})
		url := base + "/tunnels/" + tun.ID.String()
		for _, origin := range []string{"http://attacker.example", "null", "https://" + host + ".attacker.example",
			"http://localhost:1", "file://", "http://" + host + "@attacker.example"} {
			if code, body := callAs(t, "DELETE", url, "", origin, token); code != 403 {
				t.Errorf("token %q, DELETE from Origin %q: %d %s, want 403", token, origin, code, body)
			}
		}
		select {
		case err := <-done:
			t.Fatalf("a cross-site DELETE closed the tunnel: %v", err)
		default:
		}
		if code, body := callAs(t, "DELETE", url, "", "http://"+host, token); code != 200 {
			t.Fatalf("token %q, DELETE from the API's own origin: %d %s", token, code, body)
		}
		<-done
	}
}

// The name the API was told to listen on is its own too, in any case.
func TestListenNameAllowed(t *testing.T) {
	s, err := Listen("LocalHost:0", Options{Registry: engine.NewRegistry(engine.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if s.listenName != "localhost" {
		t.Fatalf("listen name %q", s.listenName)
	}
	s.listenName = "quictun.lan" // as if it resolved to this machine
	for host, want := range map[string]bool{"QuicTun.LAN:8080": true, "quictun.lan.": true, "quictun.lan.attacker.example": false,
		"attacker.example": false, "0.0.0.0:8080": false, "": false} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetHost(host)
		if got := s.hostAllowed(&ctx); got != want {
			t.Errorf("Host %q allowed = %v, want %v", host, got, want)
		}
	}
}
