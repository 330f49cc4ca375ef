package api

import (
	"embed"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// The live dashboard: one page and its scripts, embedded so that it works
// offline and from a single binary. It is static and holds no data, so it is
// served without the bearer token; the page asks for the token (or takes it
// from the URL's #token= fragment) and sends it on every API call it makes,
// which are guarded as always. dygraphs (MIT, Debian's libjs-dygraphs 2.2.1,
// dashboard/dygraphs-LICENSE.txt) draws the charts: a time-series library of
// 130 KB with no dependencies.
//
//go:embed dashboard/index.html dashboard/dashboard.js dashboard/dashboard.css dashboard/dygraph.min.js dashboard/dygraph.min.css dashboard/dygraphs-LICENSE.txt
var dashboardFS embed.FS

// dashboardCSP allows the page only its own scripts and API: an injected
// script or a sniffed value that slipped into markup would not run, and no
// other site may frame the page (its kill buttons). Inline styles are allowed
// because dygraphs writes its legends as markup with style attributes.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var dashboardTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".txt":  "text/plain; charset=utf-8",
}

// dashboardFile is the embedded file a request path names: "/" is the page,
// "/ui/NAME" one of its files; ok is false for anything else.
func dashboardFile(p string) (name string, ok bool) {
	if p == "/" {
		return "index.html", true
	}
	name, ok = strings.CutPrefix(p, "/ui/")
	if !ok || name == "" || name == "index.html" || strings.ContainsAny(name, "/\\") || name != path.Clean(name) {
		return "", false
	}
	if _, err := dashboardFS.Open("dashboard/" + name); err != nil {
		return "", false
	}
	return name, true
}

func serveDashboard(ctx *fasthttp.RequestCtx, name string) {
	if !allow(ctx, fasthttp.MethodGet, fasthttp.MethodHead) {
		return
	}
	b, err := dashboardFS.ReadFile("dashboard/" + name)
	if err != nil {
		writeError(ctx, fasthttp.StatusNotFound, "no such resource: /ui/"+name)
		return
	}
	h := &ctx.Response.Header
	h.Set("Content-Type", dashboardTypes[path.Ext(name)])
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// A new binary may bring a new page: the browser asks again each time.
	h.Set("Cache-Control", "no-cache")
	ctx.SetBody(b)
}
