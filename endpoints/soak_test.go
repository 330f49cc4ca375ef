package endpoints

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/netem"
)

// TestSoak keeps many tunnels open at once with churn, through an in-process
// lossy link, and checks every byte; that goroutines and file descriptors stay
// within what the live tunnels need throughout, and heap flat; and that once
// it stops, goroutines and descriptors are back to where they were before it
// started anything. By default it is a short run (10 s, 200 tunnels) so that
// CI exercises it; `task soak` runs the real one:
//
//	QUICTUN_SOAK=10m QUICTUN_SOAK_TUNNELS=1000 go test -run Soak -timeout 30m -v ./endpoints/
//
// QUICTUN_SOAK_PROFILE=DIR also writes a heap profile at each sample.
func TestSoak(t *testing.T) {
	duration, tunnels := 10*time.Second, 200
	if v := os.Getenv("QUICTUN_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("QUICTUN_SOAK=%q: %v", v, err)
		}
		duration, tunnels = d, 1000
	}
	if v := os.Getenv("QUICTUN_SOAK_TUNNELS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("QUICTUN_SOAK_TUNNELS=%q: %v", v, err)
		}
		tunnels = n
	}
	if testing.Short() {
		t.Skip("soak: not in -short")
	}

	// The baseline comes first, before the application and the endpoints
	// exist, so that everything the run starts is counted (after one socket,
	// so that the runtime's network poller is open already).
	if warm, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		warm.Close()
	}
	baseGoroutines, baseFDs := runtime.NumGoroutine(), openFDs()

	// Every connection is answered with the SHA-256 of what it sent, after the
	// client's half-close.
	app := checksumApp(t)
	defer app.close()
	link := netem.Model{Delay: 5 * time.Millisecond, Loss: 0.01}
	var seed atomic.Int64
	wrap := func(pc net.PacketConn) net.PacketConn { return netem.NewPacketConn(pc, link, seed.Add(1)) }
	// Warnings only: with -v the endpoints would log every one of the
	// hundreds of thousands of tunnels, and the samples below are the point.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := startPair(t, pairOptions{token: app.addr.String(),
		serverMods: func(c *ServerConfig) { c.WrapUDP, c.Logger = wrap, quiet.With("side", "server") },
		// A minute's wait for a session: on a starved machine (-race, two
		// busy cores) a session can take longer than the default, and the
		// soak is about what the tunnels carry and hold, not how fast.
		clientMods: func(c *ClientConfig) {
			c.WrapUDP, c.Logger, c.SessionWait = wrap, quiet.With("side", "client"), time.Minute
		}})
	// The session first: two hundred workers making their data at once would
	// starve its handshake.
	if err := checkedTunnel(p.client.Addr(), []byte("first")); err != nil {
		t.Fatalf("first tunnel: %v", err)
	}

	var verified, failed, bytesSent atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	for w := range tunnels {
		wg.Go(func() {
			var seed [32]byte
			seed[0], seed[1] = byte(w), byte(w>>8)
			rng := rand.NewChaCha8(seed)
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				n := 1 + int(rng.Uint64()%uint64(len(buf)))
				_, _ = rng.Read(buf[:n])
				if err := checkedTunnel(p.client.Addr(), buf[:n]); err != nil {
					failed.Add(1)
					t.Errorf("tunnel %d: %v", w, err)
					return
				}
				verified.Add(1)
				bytesSent.Add(int64(n))
			}
		})
	}

	// What the live tunnels need, at most: each has about 8 goroutines (the
	// worker, both endpoints' handlers and pumps, the application's handler)
	// and 4 descriptors (the application's two sockets and the endpoints'
	// two). A leak of one per tunnel opened passes these within seconds.
	maxGoroutines := baseGoroutines + 12*tunnels + 200
	maxFDs := baseFDs + 5*tunnels + 50
	var heaps []uint64
	sample := func() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heaps = append(heaps, ms.HeapInuse)
		goroutines, fds := runtime.NumGoroutine(), openFDs()
		t.Logf("t=%-6v tunnels verified %-7d live %-5d goroutines %-6d fds %-5d heap %.1f MiB",
			time.Since(start(ctx, duration)).Round(time.Second), verified.Load(), p.server.Registry().Len(),
			goroutines, fds, float64(ms.HeapInuse)/(1<<20))
		if goroutines > maxGoroutines {
			t.Errorf("%d goroutines for %d tunnels at once, want at most %d", goroutines, tunnels, maxGoroutines)
		}
		if fds > maxFDs {
			t.Errorf("%d file descriptors for %d tunnels at once, want at most %d", fds, tunnels, maxFDs)
		}
		if dir := os.Getenv("QUICTUN_SOAK_PROFILE"); dir != "" {
			// Heap profiles to compare the first sample with the last
			// (go tool pprof -base heap-01.pprof heap-10.pprof) when the
			// heap creeps.
			writeHeapProfile(t, filepath.Join(dir, fmt.Sprintf("heap-%02d.pprof", len(heaps))))
		}
	}
	every := max(duration/10, time.Second)
	ticker := time.NewTicker(every)
	for done := false; !done; {
		select {
		case <-ticker.C:
			sample()
		case <-ctx.Done():
			done = true
		}
	}
	ticker.Stop()
	wg.Wait()
	p.stop()
	app.close()

	if failed.Load() > 0 {
		t.Fatalf("%d tunnels failed", failed.Load())
	}
	t.Logf("soak: %d tunnels verified, %.1f MiB carried and checked, %d at once, %v, link %s",
		verified.Load(), float64(bytesSent.Load())/(1<<20), tunnels, duration, link)
	// Everything the run started has ended: goroutines and descriptors are
	// back to where they were before it started anything (goleak checks which
	// goroutines, at the end of the package).
	settled := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseGoroutines || openFDs() > baseFDs {
		if time.Now().After(settled) {
			t.Fatalf("after the run: %d goroutines and %d file descriptors, %d and %d before it",
				runtime.NumGoroutine(), openFDs(), baseGoroutines, baseFDs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Heap flat: the second half of the run does not grow past the first.
	if len(heaps) >= 4 {
		half := len(heaps) / 2
		maxFirst, maxSecond := slicesMax(heaps[:half]), slicesMax(heaps[half:])
		if float64(maxSecond) > 1.5*float64(maxFirst) {
			t.Errorf("heap grew: %.1f MiB in the first half, %.1f MiB in the second",
				float64(maxFirst)/(1<<20), float64(maxSecond)/(1<<20))
		}
	}
}

// start remembers when a soak context began, for the progress log.
func start(ctx context.Context, d time.Duration) time.Time {
	dl, _ := ctx.Deadline()
	return dl.Add(-d)
}

func slicesMax(v []uint64) uint64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// checkedTunnel sends data through one tunnel, half-closes, and checks the
// checksum the server application answers with.
func checkedTunnel(a net.Addr, data []byte) error {
	c, err := net.DialTimeout("tcp", a.String(), time.Minute)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	if _, err := c.Write(data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := closeWrite(c); err != nil {
		return err
	}
	var sum [32]byte
	if _, err := io.ReadFull(c, sum[:]); err != nil {
		return fmt.Errorf("read checksum: %w", err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(sum[:], want[:]) {
		return fmt.Errorf("checksum mismatch over %d bytes", len(data))
	}
	return nil
}

func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Errorf("heap profile: %v", err)
		return
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Errorf("heap profile: %v", err)
	}
}

func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}
