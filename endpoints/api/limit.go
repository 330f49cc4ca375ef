package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Connection limits of the API. fasthttp has the same two (MaxConnsPerIP,
// Concurrency) but answers past them in plain text with no hook to change
// that, so the API enforces them itself, in front of fasthttp, and answers in
// JSON like everywhere else.
const (
	maxConns      = 256 // connections at once
	maxConnsPerIP = 32  // connections at once from one IP address
	// maxLingering bounds the rejected connections that are drained before
	// closing (see reject); past it they are closed at once.
	maxLingering = 64
	// lingerFor bounds how long a rejected connection is drained.
	lingerFor = 500 * time.Millisecond
)

// limitListener admits at most total connections at once, and perIP from one
// address. A connection past a limit gets a JSON answer (429 past the
// per-address limit, 503 past the total) and is closed; it never reaches
// fasthttp.
type limitListener struct {
	net.Listener
	total, perIP int

	mu   sync.Mutex
	open int
	byIP map[string]int

	lingering atomic.Int32
	drains    sync.WaitGroup // the drains of rejected connections
}

func newLimitListener(ln net.Listener, total, perIP int) *limitListener {
	return &limitListener{Listener: ln, total: total, perIP: perIP, byIP: make(map[string]int)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		status, msg := l.admit(ip)
		if status == 0 {
			return &limitedConn{Conn: c, l: l, ip: ip}, nil
		}
		l.reject(c, status, msg)
	}
}

// admit counts a new connection from ip, or says why it is refused.
func (l *limitListener) admit(ip string) (status int, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.byIP[ip] >= l.perIP:
		return http.StatusTooManyRequests, fmt.Sprintf("too many connections from %s (limit %d)", ip, l.perIP)
	case l.open >= l.total:
		return http.StatusServiceUnavailable, fmt.Sprintf("too many connections (limit %d)", l.total)
	}
	l.open++
	l.byIP[ip]++
	return 0, ""
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// reject answers a refused connection and closes it. The answer is small and
// the connection new, so the write goes straight into the socket's buffer;
// the deadline only guards against the impossible. Closing a socket with
// unread input resets it, and the reset can destroy the answer before the
// client reads it, so the request the client already sent is read and dropped
// first, for at most lingerFor, by at most maxLingering goroutines at once
// (Server.Serve waits for them before it returns).
func (l *limitListener) reject(c net.Conn, status int, msg string) {
	body, _ := json.Marshal(map[string]any{"error": msg, "status": status})
	_ = c.SetWriteDeadline(time.Now().Add(lingerFor))
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"Retry-After: 1\r\nConnection: close\r\n\r\n%s", status, http.StatusText(status), len(body), body)
	if l.lingering.Add(1) > maxLingering {
		l.lingering.Add(-1)
		_ = c.Close()
		return
	}
	l.drains.Go(func() {
		defer l.lingering.Add(-1)
		defer c.Close()
		if hc, ok := c.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(lingerFor))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	})
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	l      *limitListener
	ip     string
	closed sync.Once
}

func (c *limitedConn) Close() error {
	c.closed.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}
