package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

func init() { registerSource("Http", newHTTP) }

// httpSource asks a web service: GET URL?addr=CLIENT-ADDR, answered with
// {"token": "..."}. The request is bounded in time (SourceOptions.Timeout) and
// the answer in size. Errors name the service without the query string and user
// info, which may hold an API key.
type httpSource struct {
	base    *url.URL
	shown   string // base without user info and query, for errors
	client  *http.Client
	timeout time.Duration
}

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
	return &httpSource{base: u, shown: shown.String(), client: &http.Client{Timeout: timeout}, timeout: timeout}, nil
}

func (h *httpSource) Token(ctx context.Context, clientAddr net.Addr) (string, error) {
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
