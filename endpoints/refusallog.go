package endpoints

import (
	"log/slog"
	"sync"
	"time"
)

// refusalLines is how many lines a second each kind of refusal may log; the
// rest are counted and the count rides on the next line that is logged, so a
// flood of strangers costs the log a few lines, not one per attempt.
const refusalLines = 5

type refusalLog struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]*refusalWindow
}

type refusalWindow struct {
	start      time.Time
	lines      int
	suppressed int
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, by: make(map[string]*refusalWindow)}
}

// warn logs msg, unless refusalLines lines of the same msg were logged this
// second already.
func (r *refusalLog) warn(msg string, args ...any) {
	r.mu.Lock()
	w := r.by[msg]
	if w == nil {
		w = &refusalWindow{}
		r.by[msg] = w
	}
	now := time.Now()
	if now.Sub(w.start) >= time.Second {
		w.start, w.lines = now, 0
	}
	if w.lines >= refusalLines {
		w.suppressed++
		r.mu.Unlock()
		return
	}
	w.lines++
	suppressed := w.suppressed
	w.suppressed = 0
	r.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	r.log.Warn(msg, args...)
}
