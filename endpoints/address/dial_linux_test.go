package address

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// unixServer listens on path and answers every connection with its name, so
// that a test knows which socket it reached.
func unixServer(t *testing.T, path, name string) {
	t.Helper()
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
			c.Write([]byte(name))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func reached(t *testing.T, c net.Conn) string {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A UNIX target is dialled only when its last component is a socket itself:
// not a symbolic link (to a socket out of the directory a rule names), not a
// regular file, not a directory.
func TestDialUnixRefusesLinksAndNonSockets(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the servers' cleanups
	dir, outside := t.TempDir(), t.TempDir()
	unixServer(t, filepath.Join(dir, "app.sock"), "app")
	unixServer(t, filepath.Join(outside, "docker.sock"), "docker")
	os.Symlink(filepath.Join(outside, "docker.sock"), filepath.Join(dir, "escape.sock"))
	os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	ctx := context.Background()
	c, err := Address{Unix, filepath.Join(dir, "app.sock")}.Dial(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := reached(t, c); got != "app" {
		t.Fatalf("reached %q", got)
	}
	for _, name := range []string{"escape.sock", "file", "sub"} {
		path := filepath.Join(dir, name)
		c, err := Address{Unix, path}.Dial(ctx, 5*time.Second)
		if err == nil {
			t.Fatalf("%s dialled, reaching %q", name, reached(t, c))
		}
		if !errors.Is(err, ErrNotSocket) || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "/proc/") {
			t.Errorf("%s: %v; want ErrNotSocket naming the path", name, err)
		}
	}
	if _, err := (Address{Unix, filepath.Join(dir, "missing.sock")}).Dial(ctx, 5*time.Second); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing socket: %v", err)
	}
}

// The connect goes through the descriptor that was checked, not through the
// path again: a socket whose path is longer than sun_path's 108 bytes, which
// no connect by path can reach, is reached. So nothing swapped at the path
// after the check is ever connected to.
func TestDialUnixConnectsThroughTheCheckedDescriptor(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the servers' cleanups
	deep := t.TempDir()
	for len(deep) < 120 {
		deep = filepath.Join(deep, "directory-level")
	}
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	// Bind there through a descriptor of the directory as well.
	dirFD, err := unix.Open(deep, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirFD)
	unixServer(t, "/proc/self/fd/"+strconv.Itoa(dirFD)+"/long.sock", "long")
	long := filepath.Join(deep, "long.sock")
	if c, err := net.Dial("unix", long); err == nil {
		c.Close()
		t.Fatalf("a connect by path reached %d bytes of path: the test proves nothing here", len(long))
	}
	c, err := Address{Unix, long}.Dial(context.Background(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := reached(t, c); got != "long" {
		t.Fatalf("reached %q", got)
	}
}
