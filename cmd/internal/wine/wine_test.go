// Package wine runs the Windows builds of quictun-server and quictun-client under Wine
// (Debian's wine 8.0): tunnels, a 16 MiB checksummed transfer each way, the REST API,
// and both programs talking to the Linux builds. It skips when wine is missing
// (scripts/test.sh installs it).
//
// Two things Wine 8.0 lacks that Windows 10 has, and that Go 1.26 needs, are bridged
// for these tests only (the released binaries are built without either):
//   - bcryptprimitives.dll (ProcessPrng, the runtime's random source): a DLL whose one
//     export forwards to advapi32's RtlGenRandom, linked by mingw's ld from a .def file
//     into the test prefix's system32.
//   - SIO_UDP_NETRESET: Go's net package fails every UDP socket when the ioctl does;
//     the test binaries are built with -overlay of net/fd_windows.go that lets
//     WSAEOPNOTSUPP from that one ioctl pass (the reporting it turns off is then on).
package wine

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bed is what TestMain prepared: the Windows and Linux binaries and a Wine prefix.
var bed struct {
	skip      string // why the tests skip
	winDir    string // quictun-server.exe, quictun-client.exe
	linuxDir  string // quictun-server, quictun-client
	prefix    string // WINEPREFIX
	setupTook time.Duration
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "quictun-wine-")
	if err != nil {
		panic(err)
	}
	started := time.Now()
	if err := prepare(dir); err != nil {
		bed.skip = err.Error()
	}
	bed.setupTook = time.Since(started)
	code := m.Run()
	if bed.prefix != "" {
		// wineserver outlives the programs for a few seconds; end it before the prefix goes.
		cmd := exec.Command("wineserver", "-k")
		cmd.Env = wineEnv()
		cmd.Run()
	}
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// prepare builds the binaries and the prefix; an error names what is missing.
func prepare(dir string) error {
	for _, tool := range []string{"wine", "wineserver", "x86_64-w64-mingw32-ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("no %s (apt-get install wine wine64 binutils-mingw-w64-x86-64; scripts/test.sh does)", tool)
		}
	}
	bed.winDir, bed.linuxDir, bed.prefix = filepath.Join(dir, "windows"), filepath.Join(dir, "linux"), filepath.Join(dir, "prefix")
	overlay, err := netOverlay(dir)
	if err != nil {
		return err
	}
	programs := []string{"github.com/quictun/quictun/cmd/quictun-server", "github.com/quictun/quictun/cmd/quictun-client"}
	builds := []*exec.Cmd{
		exec.Command("go", append([]string{"build", "-overlay", overlay, "-o", bed.winDir + "/"}, programs...)...),
		exec.Command("go", append([]string{"build", "-o", bed.linuxDir + "/"}, programs...)...),
	}
	builds[0].Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
	for _, b := range builds {
		if out, err := b.CombinedOutput(); err != nil {
			panic(fmt.Sprintf("%v: %v\n%s", b.Args, err, out))
		}
	}
	// The prefix: made by the first program run, then given the DLL.
	boot := exec.Command("wine", "cmd", "/c", "exit")
	boot.Env = wineEnv()
	if out, err := boot.CombinedOutput(); err != nil {
		panic(fmt.Sprintf("wine prefix: %v\n%s", err, out))
	}
	return prngDLL(dir, filepath.Join(bed.prefix, "drive_c", "windows", "system32", "bcryptprimitives.dll"))
}

// netOverlay writes the -overlay file that lets net's UDP sockets live without
// SIO_UDP_NETRESET (see the package comment).
func netOverlay(dir string) (string, error) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", err
	}
	orig := filepath.Join(strings.TrimSpace(string(goroot)), "src", "net", "fd_windows.go")
	src, err := os.ReadFile(orig)
	if err != nil {
		return "", err
	}
	call := "err = syscall.WSAIoctl(fd.pfd.Sysfd, windows.SIO_UDP_NETRESET, (*byte)(unsafe.Pointer(&flag)), size, nil, 0, &ret, nil, 0)\n\t\tif err != nil {"
	if !bytes.Contains(src, []byte(call)) {
		panic(orig + " no longer has the SIO_UDP_NETRESET call this overlay patches: look again at what Wine needs")
	}
	patched := bytes.Replace(src, []byte(call), []byte(strings.TrimSuffix(call, "if err != nil {")+"if err != nil && err != syscall.Errno(10045) {"), 1)
	file := filepath.Join(dir, "fd_windows.go")
	if err := os.WriteFile(file, patched, 0o644); err != nil {
		return "", err
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {orig: file}})
	path := filepath.Join(dir, "overlay.json")
	return path, os.WriteFile(path, overlay, 0o644)
}

// prngDLL links bcryptprimitives.dll: one export, ProcessPrng, forwarded to
// advapi32.SystemFunction036 (RtlGenRandom: the same arguments and result).
func prngDLL(dir, dst string) error {
	def := filepath.Join(dir, "bcryptprimitives.def")
	os.WriteFile(def, []byte("LIBRARY bcryptprimitives.dll\nEXPORTS\nProcessPrng = advapi32.SystemFunction036\n"), 0o644)
	empty := filepath.Join(dir, "empty.s")
	os.WriteFile(empty, []byte(".text\n"), 0o644)
	obj := filepath.Join(dir, "empty.o")
	for _, c := range [][]string{{"x86_64-w64-mingw32-as", empty, "-o", obj}, {"x86_64-w64-mingw32-ld", "--shared", "--dll", "-e", "0", "-o", dst, def, obj}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v: %s", c, err, out)
		}
	}
	return nil
}

func wineEnv() []string {
	return append(os.Environ(), "WINEPREFIX="+bed.prefix, "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=")
}

func needWine(t *testing.T) {
	t.Helper()
	if bed.skip != "" {
		t.Skip(bed.skip)
	}
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
}

// proc is a running endpoint, under Wine or native, whose log is captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
}

// start runs a program: windows=true under Wine, else the Linux build.
func start(t *testing.T, windows bool, name string, args ...string) *proc {
	t.Helper()
	var cmd *exec.Cmd
	if windows {
		cmd = exec.Command("wine", append([]string{filepath.Join(bed.winDir, name+".exe")}, args...)...)
		cmd.Env = wineEnv()
	} else {
		cmd = exec.Command(filepath.Join(bed.linuxDir, name), args...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	stderr, _ := cmd.StderrPipe()
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.capture(stderr)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s (windows %v) log:\n%s", name, windows, p.logText())
		}
	})
	return p
}

func (p *proc) capture(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.log.WriteString(sc.Text() + "\n")
		p.mu.Unlock()
	}
	p.cmd.Wait()
	close(p.done)
}

// stop kills the program (under Wine: the wine loader, which takes the program along).
func (p *proc) stop() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLog waits for a line matching re (Wine starts programs slowly: 30 s).
func (p *proc) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(30 * time.Second)
	for {
		if m := rx.FindStringSubmatch(p.logText()); m != nil {
			return m
		}
		select {
		case <-p.done:
			t.Fatalf("exited before logging %q", re)
		case <-deadline:
			t.Fatalf("no log line matching %q", re)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// echoServer is the server application: it sends back what it reads, then closes
// its side, so that a transfer checks both directions of a tunnel.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// tunnel starts a server and a client endpoint (each under Wine or not) with the
// server's API on, and returns the client's listening address and the API's.
func tunnel(t *testing.T, serverOnWindows, clientOnWindows bool) (listen, api string, srv, cli *proc) {
	t.Helper()
	target := echoServer(t)
	udp, api, listen := freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
	srv = start(t, serverOnWindows, "quictun-server", "--listen-on", udp, "--httpd-listen-on", api)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli = start(t, clientOnWindows, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp)
	cli.waitLog(t, "quictun-client listening")
	return listen, api, srv, cli
}

// transfer sends size random bytes through the tunnel and reads the echo, both
// directions at once; it fails unless every byte comes back in order.
func transfer(t *testing.T, listen string, size int, during func()) {
	t.Helper()
	c, err := net.DialTimeout("tcp", listen, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	payload := make([]byte, size)
	rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload[:size/2])
		if err == nil && during != nil {
			during()
		}
		if err == nil {
			_, err = c.Write(payload[size/2:])
		}
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("%d of %d bytes came back (%v), or not the same", len(got), size, err)
	}
}

// Both endpoints under Wine: 16 MiB up and back, the API listing the live tunnel
// while it runs, and a tunnel closed through the API.
func TestWindowsEndpoints(t *testing.T) {
	needWine(t)
	t.Logf("building both programs for windows and linux and making the Wine prefix took %s", bed.setupTook.Round(time.Millisecond))
	listen, api, srv, cli := tunnel(t, true, true)
	started := time.Now()
	transfer(t, listen, 16<<20, func() {
		var tunnels []map[string]any
		getJSON(t, "http://"+api+"/tunnels", &tunnels)
		if len(tunnels) != 1 || tunnels[0]["endpoint"] != "server" {
			t.Errorf("GET /tunnels during the transfer: %v", tunnels)
		}
	})
	t.Logf("16 MiB each way through two Windows endpoints under Wine in %s", time.Since(started).Round(time.Millisecond))

	var health map[string]any
	getJSON(t, "http://"+api+"/healthz", &health)
	if health["status"] != "ok" {
		t.Errorf("/healthz: %v", health)
	}
	var status struct {
		Sessions []struct {
			RTT float64 `json:"smoothedRttMs"`
		} `json:"sessions"`
	}
	getJSON(t, "http://"+api+"/sessions", &status)
	if len(status.Sessions) != 1 || status.Sessions[0].RTT <= 0 {
		t.Errorf("/sessions: %+v", status)
	}

	// Kill a live tunnel through the API: the application sees its connection end.
	c, err := net.DialTimeout("tcp", listen, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("echo before the kill: %v", err)
	}
	var tunnels []map[string]any
	getJSON(t, "http://"+api+"/tunnels", &tunnels)
	if len(tunnels) != 1 {
		t.Fatalf("want one live tunnel, got %v", tunnels)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+api+"/tunnels/"+tunnels[0]["uuid"].(string), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("the killed tunnel still delivers %d bytes", n)
	}
	for _, p := range []*proc{srv, cli} {
		if strings.Contains(p.logText(), "level=ERROR") {
			t.Errorf("an endpoint logged an error:\n%s", p.logText())
		}
	}
}

// A Windows endpoint and a Linux one, each way round.
func TestWindowsAndLinuxEndpoints(t *testing.T) {
	needWine(t)
	for _, c := range []struct {
		name                     string
		serverWindows, clientWin bool
	}{{"windows server, linux client", true, false}, {"linux server, windows client", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			listen, _, _, _ := tunnel(t, c.serverWindows, c.clientWin)
			transfer(t, listen, 4<<20, nil)
		})
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
