package main

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/quictun/quictun/cmd/internal/cli"
	"github.com/quictun/quictun/endpoints"
)

// reverseKeys are the keys a [[reverse]] table takes.
var reverseKeys = []string{"name", "listen-on", "target"}

// reverseSpecs collects the reverse forwards of --reverse LISTEN=TARGET and
// the [[reverse]] tables, each checked where it came from.
func reverseSpecs(f flags, file *cli.Config) ([]endpoints.ReverseSpec, error) {
	var specs []endpoints.ReverseSpec
	add := func(origin string, s endpoints.ReverseSpec) error {
		if err := s.Check(); err != nil {
			return fmt.Errorf("%s: %w", origin, err)
		}
		for _, have := range specs {
			if have.Name == s.Named().Name || have.ListenOn == s.ListenOn {
				return fmt.Errorf("%s: a second reverse forward named %q or listening on %s", origin, s.Named().Name, s.ListenOn)
			}
		}
		specs = append(specs, s.Named())
		return nil
	}
	for _, r := range f.Reverse {
		listen, target, ok := strings.Cut(r, "=")
		if !ok || listen == "" || target == "" {
			return nil, fmt.Errorf("%s %q: want LISTEN=TARGET, e.g. tcp:0.0.0.0:2222=tcp:127.0.0.1:22", file.Origin("reverse"), r)
		}
		if err := add(fmt.Sprintf("%s %s", file.Origin("reverse"), r), endpoints.ReverseSpec{ListenOn: listen, Target: target}); err != nil {
			return nil, err
		}
	}
	for i, t := range file.Tables("reverse") {
		origin := fmt.Sprintf("%s line %d: [[reverse]] %d", file.File(), t.Line, i+1)
		s, err := reverseTable(t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", origin, err)
		}
		if err := add(origin, s); err != nil {
			return nil, err
		}
	}
	return specs, nil
}

// reverseTable reads one [[reverse]] table; unknown keys and values of the
// wrong type are errors that name the key.
func reverseTable(t cli.Table) (endpoints.ReverseSpec, error) {
	var s endpoints.ReverseSpec
	keys := make([]string, 0, len(t.Values))
	for k := range t.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(reverseKeys, k) {
			return s, fmt.Errorf("unknown key %q (a reverse forward takes %s)", k, strings.Join(reverseKeys, ", "))
		}
		v, ok := t.Values[k].(string)
		if !ok {
			return s, fmt.Errorf("%s = %v: must be a string", k, t.Values[k])
		}
		switch k {
		case "name":
			s.Name = v
		case "listen-on":
			s.ListenOn = v
		case "target":
			s.Target = v
		}
	}
	switch {
	case s.ListenOn == "":
		return s, errors.New("listen-on is missing (where the server listens)")
	case s.Target == "":
		return s, errors.New("target is missing (what connections reach on this side)")
	}
	return s, nil
}
