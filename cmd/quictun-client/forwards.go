package main

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/quictun/quictun/cmd/internal/cli"
	"github.com/quictun/quictun/endpoints"
)

// Names of the forwards that the proxy flags make.
const (
	socksForward     = "socks"
	httpProxyForward = "http-proxy"
)

// forwardKeys are the keys a [[forward]] table takes.
var forwardKeys = []string{"name", "listen-on", "proxy", "token-source-plugin", "token-source", "token-source-timeout", "username", "password"}

// forwardSpecs collects every forward the flags and the config file ask for:
// the one-forward shortcut (--listen-on with --token-source), each --forward
// LISTEN=TOKEN, each [[forward]] table, and the proxies. Each spec is checked
// here, so that its error names where it came from.
func forwardSpecs(f flags, file *cli.Config, reverses bool) ([]endpoints.ForwardSpec, error) {
	var specs []endpoints.ForwardSpec
	add := func(origin string, s endpoints.ForwardSpec) error {
		if err := s.Check(); err != nil {
			return fmt.Errorf("%s: %w", origin, err)
		}
		for _, have := range specs {
			if have.Name == s.Named().Name {
				return fmt.Errorf("%s: two forwards named %q: give one a name of its own", origin, have.Name)
			}
		}
		specs = append(specs, s.Named())
		return nil
	}
	if f.TokenSource != "" {
		err := add(file.Origin("token-source"), endpoints.ForwardSpec{
			Name: endpoints.DefaultForward, ListenOn: f.ListenOn,
			TokenSourcePlugin: f.TokenSourcePlugin, TokenSource: f.TokenSource, TokenSourceTimeout: f.TokenSourceTimeout,
		})
		if err != nil {
			return nil, err
		}
	}
	for _, fw := range f.Forward {
		listen, tok, ok := strings.Cut(fw, "=")
		if !ok || listen == "" || tok == "" {
			return nil, fmt.Errorf("%s %q: want LISTEN=TOKEN, e.g. tcp:127.0.0.1:6500=tcp:10.0.0.5:22", file.Origin("forward"), fw)
		}
		if err := add(fmt.Sprintf("%s %s", file.Origin("forward"), fw), endpoints.ForwardSpec{ListenOn: listen, TokenSource: tok}); err != nil {
			return nil, err
		}
	}
	for i, t := range file.Tables("forward") {
		origin := fmt.Sprintf("%s line %d: [[forward]] %d", file.File(), t.Line, i+1)
		s, err := tableSpec(t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", origin, err)
		}
		if err := add(origin, s); err != nil {
			return nil, err
		}
	}
	if f.SocksListenOn != "" {
		err := add(file.Origin("socks-listen-on"), endpoints.ForwardSpec{Name: socksForward, ListenOn: f.SocksListenOn,
			Proxy: endpoints.ProxySOCKS5, Username: f.ProxyUsername, Password: f.ProxyPassword})
		if err != nil {
			return nil, err
		}
	}
	if f.HttpProxyListenOn != "" {
		err := add(file.Origin("http-proxy-listen-on"), endpoints.ForwardSpec{Name: httpProxyForward, ListenOn: f.HttpProxyListenOn,
			Proxy: endpoints.ProxyHTTP, Username: f.ProxyUsername, Password: f.ProxyPassword})
		if err != nil {
			return nil, err
		}
	}
	if (f.ProxyUsername != "" || f.ProxyPassword != "") && f.SocksListenOn == "" && f.HttpProxyListenOn == "" {
		return nil, fmt.Errorf("%s: only with --socks-listen-on or --http-proxy-listen-on", file.Origin("proxy-username"))
	}
	if len(specs) == 0 && !reverses {
		return nil, errors.New("nothing to forward: give --token-source (with --listen-on), --forward LISTEN=TOKEN, " +
			"[[forward]] tables in --config, --socks-listen-on, --http-proxy-listen-on, or a reverse forward (--reverse, [[reverse]])")
	}
	return specs, nil
}

// tableSpec reads one [[forward]] table; unknown keys and values of the
// wrong type are errors that name the key.
func tableSpec(t cli.Table) (endpoints.ForwardSpec, error) {
	var s endpoints.ForwardSpec
	keys := make([]string, 0, len(t.Values))
	for k := range t.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(forwardKeys, k) {
			return s, fmt.Errorf("unknown key %q (a forward takes %s)", k, strings.Join(forwardKeys, ", "))
		}
		v, ok := t.Values[k].(string)
		if !ok && (k == "username" || k == "password") {
			return s, fmt.Errorf("%s must be a string", k) // its value is not shown: it is a credential
		}
		if !ok {
			return s, fmt.Errorf("%s = %v: must be a string", k, t.Values[k])
		}
		switch k {
		case "name":
			s.Name = v
		case "listen-on":
			s.ListenOn = v
		case "proxy":
			s.Proxy = v
		case "token-source-plugin":
			s.TokenSourcePlugin = v
		case "token-source":
			s.TokenSource = v
		case "token-source-timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return s, fmt.Errorf("token-source-timeout = %q: want a duration like \"5s\"", v)
			}
			s.TokenSourceTimeout = d
		case "username":
			s.Username = v
		case "password":
			s.Password = v
		}
	}
	if s.ListenOn == "" {
		return s, errors.New("listen-on is missing")
	}
	if s.Proxy == "" && s.TokenSource == "" {
		return s, errors.New("token-source is missing (or set proxy = \"socks5\" or \"http\")")
	}
	return s, nil
}
