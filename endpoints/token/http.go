package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

func init() { registerSource("Http", newHTTP) }

// httpSource asks a web service: GET URL?addr=CLIENT-ADDR, answered with
// {"token": "..."}. The request is bounded in time (SourceOptions.Timeout) and
// the answer in size. Errors name the service without the query string and user
// info, which may hold an API key.
//
// The answer decides where the client's tunnels go, so who may give it is
// narrow: redirects are followed only on the same host and port (or from
// http:// to https:// on the default ports), never to another host that
// would then learn the client addresses and the URL's credentials and choose
// the targets; and a cleartext http:// URL beyond loopback, which anyone on
// the path can read and answer, is warned about once.
type httpSource struct {
	base    *url.URL
	shown   string // base without user info and query, for errors
	client  *http.Client
	timeout time.Duration

	log       *slog.Logger
	cleartext bool // http:// to a host that is not loopback
	warned    sync.Once
}

// maxHTTPRedirects bounds the same-host redirects followed for one token.
const maxHTTPRedirects = 3

const maxHTTPTokenBody = 64 << 10

func newHTTP(raw string, o SourceOptions) (Source, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("token source Http: bad URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("token source Http: URL %q must be http:// or https:// with a host", raw)
	}
	timeout, err := o.timeout()
	if err != nil {
		return nil, fmt.Errorf("token source Http: %w", err)
	}
	shown := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &httpSource{base: u, shown: shown.String(), timeout: timeout, log: log,
		cleartext: u.Scheme == "http" && !isLoopbackHost(u.Hostname())}
	h.client = &http.Client{Timeout: timeout, CheckRedirect: h.checkRedirect}
	return h, nil
}

// checkRedirect follows a redirect only to the host and port of the URL it
// was given, and never from https:// down to http://.
func (h *httpSource) checkRedirect(req *http.Request, via []*http.Request) error {
	to := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path}
	if len(via) > maxHTTPRedirects {
		return fmt.Errorf("more than %d redirects (the last to %s)", maxHTTPRedirects, to.String())
	}
	if !sameService(h.base, req.URL) {
		return fmt.Errorf("redirected to %s: refused, the token source follows redirects on its own host only "+
			"(point --token-source at the final URL)", to.String())
	}
	return nil
}

// sameService says whether to is on the host and port of from, without a
// downgrade to cleartext; http:// to https:// on the default ports counts.
func sameService(from, to *url.URL) bool {
	if !strings.EqualFold(strings.TrimSuffix(from.Hostname(), "."), strings.TrimSuffix(to.Hostname(), ".")) {
		return false
	}
	fromPort, toPort := effectivePort(from), effectivePort(to)
	switch {
	case from.Scheme == to.Scheme:
		return fromPort == toPort
	case from.Scheme == "http" && to.Scheme == "https":
		return fromPort == "80" && toPort == "443"
	}
	return false
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// isLoopbackHost says whether a URL's host stays on this machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (h *httpSource) Token(ctx context.Context, clientAddr net.Addr) (string, error) {
	if h.cleartext {
		h.warned.Do(func() {
			h.log.Warn("token source Http asks over cleartext http:// beyond loopback: anyone on the path reads the "+
				"client addresses, the URL's credentials and the tokens, and can answer with targets of its own; use https://",
				"url", h.shown)
		})
	}
	u := *h.base
	q := u.Query()
	addr := ""
	if clientAddr != nil {
		addr = clientAddr.String()
	}
	q.Set("addr", addr)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("token source Http: %w", err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		var ne net.Error
		if ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
			return "", fmt.Errorf("token source Http: %s gave no answer within %v (--token-source-timeout)", h.shown, h.timeout)
		}
		// A *url.Error quotes the whole URL, query string included.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("token source Http: ask %s: %w", h.shown, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPTokenBody+1))
	if err != nil {
		return "", fmt.Errorf("token source Http: read answer from %s: %w", h.shown, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token source Http: %s answered %s", h.shown, resp.Status)
	}
	tok, err := decodeAnswer(body)
	if err != nil {
		return "", fmt.Errorf("token source Http: answer from %s %w", h.shown, err)
	}
	return tok, nil
}

// decodeAnswer reads {"token": "..."} from a web service's answer. Its errors
// read on from "answer from URL".
func decodeAnswer(body []byte) (string, error) {
	if len(body) > maxHTTPTokenBody {
		return "", fmt.Errorf("exceeds %d bytes", maxHTTPTokenBody)
	}
	var answer struct {
		Token *string `json:"token"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return "", fmt.Errorf("is not {\"token\": \"...\"}: %w", err)
	}
	if answer.Token == nil || *answer.Token == "" {
		return "", errors.New("has no token")
	}
	return *answer.Token, nil
}
