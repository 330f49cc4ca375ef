package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Logging is the flags every command has for its logs.
type Logging struct {
	LogLevel  string `enum:"debug,info,warn,error" default:"info" help:"Least severe level logged (${enum})."`
	LogFormat string `enum:"text,json" default:"text" help:"Log format: text for people, json for log collectors (${enum})."`
	LogFile   string `help:"Append the log to FILE instead of standard error (a Windows service has none)." type:"path" placeholder:"FILE"`
}

// Logger builds the structured logger the flags ask for.
func (l Logging) Logger(w io.Writer) *slog.Logger {
	var fileErr error
	if l.LogFile != "" {
		// Kept open for the process's life: the logger is.
		f, err := os.OpenFile(l.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			w = f
		}
		fileErr = err
	}
	log := l.handler(w)
	if fileErr != nil {
		log.Warn("cannot open --log-file; logging to standard error", "err", fileErr)
	}
	return log
}

func (l Logging) handler(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.LogLevel))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	if l.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// durationsAsText writes durations as Go spells them ("1.5s") in both formats:
// slog's JSON handler would write integer nanoseconds, which neither people
// nor most log collectors read as a duration.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// version and commit are set at build time (task release):
// -ldflags "-X .../cli.version=1.2.3 -X .../cli.commit=0123456789ab".
var version, commit = "", ""

// Version is the program's version: the one set at build time (with its commit),
// else what the Go toolchain recorded (module version or VCS revision).
func Version() string {
	if version != "" && commit != "" {
		return version + " (commit " + commit + ")"
	}
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "devel-" + rev + modified
	}
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}

// SignalContext ends on the first SIGINT or SIGTERM, or the Windows service
// manager's stop; a second signal kills the process the default way, for an
// operator who does not want to wait for the drain. Its cancel func, called
// once the program has drained, also tells the service manager it stopped.
func SignalContext(log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	stopService := runAsService(cancel, log)
	go func() {
		select {
		case sig := <-ch:
			log.Info("signal received: shutting down (send it again to quit at once)", "signal", sig.String())
			signal.Stop(ch)
			cancel()
		case <-ctx.Done():
			signal.Stop(ch)
		}
	}()
	return ctx, func() { cancel(); stopService() }
}

// OnHangup calls fn on each SIGHUP until ctx ends or stop is called; stop
// waits for the watcher (and a call of fn under way) to end.
func OnHangup(ctx context.Context, fn func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(ch)
		for {
			select {
			case <-ch:
				fn()
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// Fatal prints err the way a user should see it and exits with status 1.
func Fatal(log *slog.Logger, msg string, err error) {
	if log != nil {
		log.Error(msg, "err", err)
	} else {
		fmt.Fprintf(os.Stderr, "%s: %v\n", msg, err)
	}
	os.Exit(1)
}
