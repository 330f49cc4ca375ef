package api

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/quictun/quictun/engine"
)

// The page and its files come without the token (they hold no data), with a
// policy that lets them run only their own scripts; the data stays guarded.
func TestDashboardIsServedAndDataStaysGuarded(t *testing.T) {
	reg := engine.NewRegistry(engine.Config{})
	base := startAPI(t, Options{Registry: reg, Token: "s3cret"})
	for path, want := range map[string]string{
		"/":                        "text/html; charset=utf-8",
		"/ui/dashboard.js":         "text/javascript; charset=utf-8",
		"/ui/dashboard.css":        "text/css; charset=utf-8",
		"/ui/dygraph.min.js":       "text/javascript; charset=utf-8",
		"/ui/dygraph.min.css":      "text/css; charset=utf-8",
		"/ui/dygraphs-LICENSE.txt": "text/plain; charset=utf-8",
	} {
		code, body, h := call(t, "GET", base+path, "")
		if code != 200 || h.Get("Content-Type") != want || len(body) == 0 {
			t.Errorf("GET %s: %d %q (%d bytes), want 200 %q", path, code, h.Get("Content-Type"), len(body), want)
			continue
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, h)
		}
		embedded, _ := os.ReadFile("dashboard/" + strings.TrimPrefix(strings.TrimPrefix(path, "/ui/"), "/"))
		if path == "/" {
			embedded, _ = os.ReadFile("dashboard/index.html")
		}
		if !bytes.Equal(body, embedded) {
			t.Errorf("GET %s: not the file in dashboard/", path)
		}
	}
	// The page loads nothing from elsewhere: it works offline.
	_, page, _ := call(t, "GET", base+"/", "")
	for _, external := range []string{"http:", "https:", "//"} {
		if bytes.Contains(page, []byte(`="`+external)) {
			t.Errorf("the page links to %s...", external)
		}
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/", 405},
		{"DELETE", "/ui/dashboard.js", 405},
		{"GET", "/ui/", 401},               // not a file: the API's guard answers
		{"GET", "/ui/index.html", 401},     // the page lives at / only
		{"GET", "/ui/missing.js", 401},     // nothing but the embedded files
		{"GET", "/ui/../tunnels", 401},     // the path is cleaned first: the data stays guarded
		{"GET", "/ui/..%2ftunnels", 401},   // and so when escaped
		{"GET", "/ui/%2e%2e/api.go", 401},  // no file from the disk
		{"GET", "/ui/dashboard/x.js", 401}, // no sub-folders
		{"GET", "/tunnels", 401},
		{"GET", "/sessions", 401},
	} {
		if code, body, _ := call(t, c.method, base+c.path, ""); code != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.code)
		}
	}
	if code, _, _ := call(t, "GET", base+"/ui/missing.js", "s3cret"); code != 404 {
		t.Errorf("missing file with the token: %d, want 404", code)
	}
}
