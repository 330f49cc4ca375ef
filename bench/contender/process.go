package contender

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// userHZ is the unit of utime/stime in /proc/PID/stat. Linux fixes USER_HZ at 100 for
// every architecture's user-space ABI, whatever the kernel's internal HZ.
const userHZ = 100

// stopGrace is how long a process gets after SIGTERM before SIGKILL.
const stopGrace = 3 * time.Second

// Process is one program the harness started (an endpoint, a server, a load client).
// It owns the goroutine that waits for the program; Stop ends the program and waits.
type Process struct {
	Role string // what it is in the run: "quictun-client", "iperf3-server", ...

	cmd    *exec.Cmd
	output *tailBuffer
	done   chan struct{} // closed when the program has exited and been reaped
	err    error         // from Wait, valid after done

	stopOnce sync.Once
}

// StartProcess starts cmd. Its stdout and stderr are kept (the last 16 KiB) for error
// messages unless the caller set them.
func StartProcess(role string, cmd *exec.Cmd) (*Process, error) {
	p := &Process{Role: role, cmd: cmd, output: &tailBuffer{limit: 16 << 10}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.output
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.output
	}
	// A program that exits while a child of its own still holds the output pipe must
	// not hang Wait.
	cmd.WaitDelay = stopGrace
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", role, cmd.Path, err)
	}
	go p.reap()
	return p, nil
}

func (p *Process) reap() {
	p.err = p.cmd.Wait()
	close(p.done)
}

// PID is the operating-system process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the program has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output returns the tail of what the program printed.
func (p *Process) Output() string { return strings.TrimSpace(p.output.String()) }

// Err is the exit status once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// CPUSeconds is the user+system CPU time the program has used so far, all threads
// included; after exit it is the final figure from the kernel's rusage.
func (p *Process) CPUSeconds() (float64, error) {
	select {
	case <-p.done:
		if st := p.cmd.ProcessState; st != nil {
			return (st.UserTime() + st.SystemTime()).Seconds(), nil
		}
		return 0, errors.New("no process state")
	default:
	}
	cpu, err := procCPUSeconds(p.PID())
	if err != nil {
		select {
		case <-p.done: // exited between the check and the read
			return p.CPUSeconds()
		default:
			return 0, err
		}
	}
	return cpu, nil
}

// procCPUSeconds reads utime+stime of pid from /proc/PID/stat.
func procCPUSeconds(pid int) (float64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

// parseStatCPU extracts utime (field 14) and stime (field 15). The command name (field
// 2) is in parentheses and may itself contain spaces or parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no ')'")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state), so utime is fields[11], stime fields[12].
	if len(fields) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields after the name", len(fields))
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return float64(utime+stime) / userHZ, nil
}

// Stop ends the program (SIGTERM, then SIGKILL after stopGrace) and waits for it. It is
// idempotent and returns nil when the program was already gone or ended on the signal.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	<-p.done
	return nil
}

// Wait waits for the program to exit by itself, at most timeout; then it is stopped.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.describe(p.err)
	case <-time.After(timeout):
		p.Stop()
		return fmt.Errorf("%s did not finish within %s", p.Role, timeout)
	}
}

// describe adds the program's last words to its exit error.
func (p *Process) describe(err error) error {
	if err == nil {
		return nil
	}
	if out := p.Output(); out != "" {
		return fmt.Errorf("%s: %w: %s", p.Role, err, lastLines(out, 5))
	}
	return fmt.Errorf("%s: %w", p.Role, err)
}

// Failure returns a description if the program has already exited (an endpoint that
// died during a run), else nil.
func (p *Process) Failure() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("%s exited early: %s", p.Role, lastLines(p.Output(), 5))
		}
		return p.describe(p.err)
	default:
		return nil
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
