// Package logtap collects an endpoint's log lines for tests, so that a test
// can check what an operator would read (and what must never be there) while
// the endpoint goes on writing.
package logtap

import (
	"bytes"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLimit is how long the Wait methods wait for a line.
const waitLimit = 5 * time.Second

// Tap is a log destination that tests read while endpoints write. Under
// go test -v it also echoes every line to stderr.
type Tap struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Tap) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Testing() && testing.Verbose() {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *Tap) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Logger logs at level and above into the tap, as text, each line with args
// (key-value pairs, as slog.Logger.With takes them).
func (l *Tap) Logger(level slog.Level, args ...any) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level})).With(args...)
}

// Lines returns the lines that contain every one of subs.
func (l *Tap) Lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// WaitForLine waits until a line with every one of subs is logged, and
// returns the first such line. It fails the test after waitLimit.
func (l *Tap) WaitForLine(t testing.TB, subs ...string) string {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		if found := l.Lines(subs...); len(found) > 0 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", subs, l.String())
		}
	}
}

// WaitForMatch waits until the log matches the regular expression re, and
// returns the submatches. It fails the test after waitLimit.
func (l *Tap) WaitForMatch(t testing.TB, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		if m := rx.FindStringSubmatch(l.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line matching %q in:\n%s", re, l.String())
		}
	}
}
