package cli

import (
	"bytes"
	"strings"
	"testing"
)

// A mistyped secret must not end up in a terminal, a journal or a bug report:
// every way a config file or the command line can get a sensitive value
// wrong gets an error that names the key and line but holds no piece of it.
func TestConfigErrorsHideSecrets(t *testing.T) {
	const s = "Hunter2Hunter2"
	for file, want := range map[string]string{
		"secret = " + s + "\n":                                                 "line 1 column 10: secret is not valid TOML",
		"\nsecret = \"" + s + "\n":                                             "line 2 column",
		"secret = '" + s + "\\" + s + "\n":                                     "line 1 column",
		"secret = \"" + s + "\\q" + s + "\"\n":                                 "line 1 column",
		"secret = \"" + s + "\" " + s + "\n":                                   "line 1 column",
		"httpd-token = 12e" + s + "\n":                                         "httpd-token is not valid TOML",
		"httpd-token = 1_" + s + "\n":                                          "httpd-token is not valid TOML",
		"secret = \"\"\"\n" + s + "\n\\q" + s + "\n":                           "secret is not valid TOML",
		"[[forward]]\nlisten-on = \"tcp:127.0.0.1:1\"\npassword = " + s + "\n": "line 3 column 12: password is not valid TOML",
		"secret = 1234" + "5678\n":                                             "line 1: secret = " + redacted + ": not a string",
		"count = 1\nsecret = [\"" + s + "\"]\n":                                "line 2: secret = " + redacted,
		"secret = { a = \"" + s + "\" }\n":                                     "line 1: secret = " + redacted,
	} {
		_, _, err := parseTest(t, file)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", file, err, want)
			continue
		}
		var out bytes.Buffer
		explain(&out, "quictun-server", err)
		for _, piece := range []string{"Hunter", "unter2", "2Hun", "'H'", "U+0048", "5678", "2026-01", "12e"} {
			if strings.Contains(out.String(), piece) {
				t.Errorf("%q: the error shows %q of the secret: %s", file, piece, out.String())
			}
		}
	}
	// Other keys keep their full messages.
	if _, _, err := parseTest(t, "listen-on = nope\n"); err == nil || !strings.Contains(err.Error(), "toml: expected keyword") {
		t.Errorf("a key that is not secret: %v", err)
	}

	for _, args := range [][]string{
		{"--secret", "Hunter2", "Hunter3"},             // a secret with a space, unquoted
		{"--secret=Hunter2", "Hunter3", "Hunter4"},     //
		{"--httpd-token", "Hunter2", "Hunter3", "-v"},  // ends at the next flag
		{"--count", "1", "--httpd-token=a", "Hunter3"}, // a one-letter value leaves kong's words whole
	} {
		_, _, err := parseTest(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), "unexpected argument "+redacted) || strings.Contains(err.Error(), "Hunter") {
			t.Errorf("%q: %v", args, err)
		}
	}
	if _, _, err := parseTest(t, "", "--count", "Hunter3"); err == nil || !strings.Contains(err.Error(), "Hunter3") {
		t.Errorf("a flag that is not secret keeps its value in the error: %v", err)
	}
}
