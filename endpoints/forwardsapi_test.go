package endpoints

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/endpoints/api"
)

// The client's API lists, adds and removes forwards with the API token; a
// forward added there survives a SetForwards (a reload), which owns only the
// config's forwards.
func TestForwardsThroughTheAPI(t *testing.T) {
	a := startApp(t, loopbackTCP(), greeter("a"))
	defer a.close()
	p := startPair(t, pairOptions{token: a.addr.String()})
	defer p.stop()
	srv, err := api.Listen("127.0.0.1:0", api.Options{Registry: p.client.Registry(), Forwards: p.client, Token: "tok", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	defer func() { srv.Shutdown(); <-served }()
	base := "http://" + srv.Addr().String()
	do := func(method, path, body, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, _ := do("GET", "/forwards", "", ""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	if code, body := do("GET", "/forwards", "", "tok"); code != 200 || !strings.Contains(body, `"name": "default"`) {
		t.Errorf("list: %d %s", code, body)
	}
	add := `{"name": "api-one", "listenOn": "tcp:127.0.0.1:0", "tokenSource": "` + a.addr.String() + `"}`
	code, body := do("POST", "/forwards", add, "tok")
	if code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, body)
	}
	var added ForwardStatus
	json.Unmarshal([]byte(body), &added)
	if added.Name != "api-one" || added.Origin != "api" || added.Target != a.addr.Addr {
		t.Errorf("added: %+v", added)
	}
	if got := hello(t, p.client.ForwardAddr("api-one")); got != "a" {
		t.Errorf("added forward reached %q", got)
	}
	for _, bad := range []struct {
		body string
		code int
		want string
	}{
		{add, http.StatusConflict, "exists"},
		{`{"name": "x", "listenOn": "nowhere", "tokenSource": "x:1"}`, 400, "nowhere"},
		{`{"name": "x", "listenOn": "tcp:127.0.0.1:0", "tokenSource": "x:1", "colour": "red"}`, 400, "colour"},
		{`{"name": "x", "listenOn": "tcp:127.0.0.1:0", "proxy": "socks5", "username": "u"}`, 400, "both"},
		{`not json`, 400, "invalid"},
		{`{"name": "x"}`, 400, "listenOn"},
	} {
		if code, body := do("POST", "/forwards", bad.body, "tok"); code != bad.code || !strings.Contains(body, bad.want) {
			t.Errorf("POST %s: %d %s; want %d naming %q", bad.body, code, body, bad.code, bad.want)
		}
	}

	// A reload that names only the config's forward keeps the API's.
	if err := p.client.SetForwards([]ForwardSpec{{Name: DefaultForward, ListenOn: p.client.Addr().String(), TokenSource: a.addr.String()}}); err != nil {
		t.Fatal(err)
	}
	addr := p.client.ForwardAddr("api-one")
	if addr == nil {
		t.Fatal("a reload removed the API's forward")
	}
	if code, body := do("DELETE", "/forwards/api-one", "", "tok"); code != 200 || !strings.Contains(body, "draining") {
		t.Errorf("delete: %d %s", code, body)
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Error("deleted forward still accepts")
	}
	if code, _ := do("DELETE", "/forwards/api-one", "", "tok"); code != http.StatusNotFound {
		t.Errorf("delete again: %d", code)
	}
	if code, _ := do("PUT", "/forwards", "", "tok"); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", code)
	}
}
