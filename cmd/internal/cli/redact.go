package cli

import (
	"errors"
	"regexp"
	"strings"

	"github.com/alecthomas/kong"
)

// A flag tagged `sensitive:""` holds a secret (the shared secret, the API's
// token). An error about its value names the key, line and what is wrong with
// it, never the value or a piece of it: config errors end up in terminals,
// journals and bug reports.

// redacted stands where a sensitive value would have been shown.
const redacted = "(value not shown: it is secret)"

// tableSecrets are keys inside the config's tables that hold credentials
// (a [[forward]]'s password).
var tableSecrets = []string{"password"}

// sensitiveFlags returns the names of the flags tagged sensitive, and of the
// table keys that hold credentials.
func sensitiveFlags(app *kong.Application) map[string]bool {
	names := map[string]bool{}
	for _, k := range tableSecrets {
		names[k] = true
	}
	for _, f := range app.Flags {
		if isSensitive(f) {
			names[f.Name] = true
		}
	}
	return names
}

func isSensitive(f *kong.Flag) bool { return f.Tag != nil && f.Tag.Has("sensitive") }

// shown is how an error shows the value v of flag: as it is, unless the flag
// is sensitive.
func shown(flag *kong.Flag, v any) any {
	if isSensitive(flag) {
		return redacted
	}
	return v
}

// keyOfLine finds the key a TOML line sets ("key = ...", the key bare or
// quoted).
var keyOfLine = regexp.MustCompile(`^\s*["']?([A-Za-z0-9_-]+)["']?\s*=`)

// sensitiveKeyAt returns the sensitive key that line row (from 1) of data
// sets, or whose multi-line value it continues: the nearest key at or above
// it. The parser's message about such a line may quote the value (a
// character of it, or a number it failed to read), so it is not shown.
func sensitiveKeyAt(data []byte, row int, sensitive map[string]bool) (string, bool) {
	lines := strings.Split(string(data), "\n")
	for i := min(row, len(lines)) - 1; i >= 0; i-- {
		if m := keyOfLine.FindStringSubmatch(lines[i]); m != nil {
			return m[1], sensitive[m[1]]
		}
	}
	return "", false
}

// redactArgs takes out of a command-line error what may be a sensitive flag's
// value: the value itself and, when the value was not quoted and so split at
// a space, the words after it (kong calls them unexpected arguments).
func redactArgs(err error, args []string, sensitive map[string]bool) error {
	if err == nil {
		return nil
	}
	var secrets []string
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "--") {
			continue
		}
		name, val, hasVal := strings.Cut(args[i][2:], "=")
		if !sensitive[name] {
			continue
		}
		j := i + 1
		if hasVal {
			secrets = append(secrets, val)
		} else if j < len(args) {
			secrets = append(secrets, args[j])
			j++
		}
		for ; j < len(args) && !strings.HasPrefix(args[j], "-"); j++ {
			secrets = append(secrets, args[j])
		}
		i = j - 1
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			// Whole words only: a short value must not take letters out of
			// kong's words.
			word := regexp.MustCompile(`(^|[^\pL\pN])` + regexp.QuoteMeta(s) + `($|[^\pL\pN])`)
			msg = word.ReplaceAllString(msg, "${1}"+redacted+"${2}")
		}
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}
