package address

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A UNIX socket target on Windows (AF_UNIX, Windows 10 1803 and later): the socket is
// reached, a plain file is refused. Wine 8.0 has no AF_UNIX: there it skips.
func TestDialUnixOnWindows(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	// Probe before t.TempDir, whose cleanup Wine fails on.
	if s, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0); err != nil {
		t.Skipf("this Windows (or Wine) has no AF_UNIX: %v", err)
	} else {
		syscall.Closesocket(s)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })

	ctx := context.Background()
	c, err := Address{Network: Unix, Addr: path}.Dial(ctx, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hi" {
		t.Fatalf("read %q from the socket", got)
	}

	file := filepath.Join(dir, "plain")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := (Address{Network: Unix, Addr: file}).Dial(ctx, 5*time.Second); !errors.Is(err, ErrNotSocket) {
		t.Fatalf("dial a plain file: %v, want ErrNotSocket", err)
	}
}
