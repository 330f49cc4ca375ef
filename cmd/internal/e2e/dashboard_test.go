package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds the headless browser the dashboard test drives, or skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (Debian: apt-get install chromium; scripts/test.sh installs it): the dashboard is not tested in a browser")
	return ""
}

// The dashboard in a real browser, as a user opens it: the token asked for
// and given, the live tunnels of a running server with their sniffed
// protocols (a hostile one shown as text), charts that fill, counts that
// follow the traffic, and the kill button closing a tunnel. The screenshot
// goes to the test's artifacts, and to $QUICTUN_DASHBOARD_SCREENSHOT when set
// (docs/dashboard.png is made so).
func TestDashboardInChromium(t *testing.T) {
	browser := chromium(t)
	const token = "dash-board-token"
	target := echoServer(t)
	udp, apiAddr, listen := freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp, "--httpd-listen-on", apiAddr, "--httpd-token", token)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	srv.waitLog(t, "REST API listening")
	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp)
	cli.waitLog(t, "quictun-client listening")

	// Three tunnels: HTTP whose path is markup (it must show as text), SSH,
	// and one that carries a steady stream for the charts.
	dial := func(first string) net.Conn {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		if _, err := c.Write([]byte(first)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, len(first))); err != nil {
			t.Fatal(err)
		}
		return c
	}
	const hostile = "/<img/src=x/onerror=window.pwned=1>"
	web := dial("GET " + hostile + " HTTP/1.1\r\nHost: intranet.example\r\n\r\n")
	dial("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
	bulk := dial("bulk")
	stop := make(chan struct{})
	var pumping sync.WaitGroup
	pumping.Go(func() { pumpEcho(bulk, stop) })
	defer func() { close(stop); pumping.Wait() }()

	var tunnels []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for len(tunnels) < 3 && time.Now().Before(deadline) {
		tunnels = nil
		getAuthJSON(t, "http://"+apiAddr+"/tunnels", token, &tunnels)
	}
	if len(tunnels) != 3 {
		t.Fatalf("server tunnels: %v", tunnels)
	}
	ids := map[string]string{} // protocol -> uuid
	for _, tun := range tunnels {
		ids[tun["protocol"].(string)] = tun["uuid"].(string)
	}
	webID := ids["http"]
	if webID == "" || ids["ssh"] == "" {
		t.Fatalf("sniffed protocols: %v", ids)
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000))...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()
	var consoleMu sync.Mutex
	var consoleErrors []string
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal("start the browser:", err)
	}
	messages := chromedp.Console(ctx)
	var reading sync.WaitGroup
	reading.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				consoleMu.Lock()
				consoleErrors = append(consoleErrors, m.String())
				consoleMu.Unlock()
			}
		}
	})
	defer func() { cancel(); reading.Wait() }()

	base := "http://" + apiAddr + "/"
	// Without the token the page asks for it; with it, the board opens.
	must(t, "ask for the token", chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#login"))))
	must(t, "give a wrong token", chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), "wrong"),
		chromedp.Click(chromedp.CSS("#login button"))))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("login-error").textContent.includes("refused")`,
		chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		t.Fatal("a wrong token is not told:", err)
	}
	must(t, "give the token", chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login button")), chromedp.WaitVisible(chromedp.CSS(`article[data-uuid="`+webID+`"]`))))

	card := `document.querySelector('article[data-uuid="` + webID + `"]')`
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](card+`.textContent`))
	if err != nil || !strings.Contains(text, hostile) || !strings.Contains(text, "http") || !strings.Contains(text, "intranet.example") {
		t.Fatalf("HTTP tunnel card: %q, %v", text, err)
	}
	if injected, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!window.pwned || document.querySelector("#tunnels img") !== null`)); err != nil || injected {
		t.Fatalf("a sniffed value became markup: %v %v", injected, err)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("article.tunnel").length`)); err != nil || n != 3 {
		t.Fatalf("tunnel cards: %d, %v", n, err)
	}

	// The counts follow the traffic: the HTTP tunnel carries more, the page shows it.
	before := countUp(t, ctx, card)
	more := make([]byte, 300<<10)
	if _, err := web.Write(more); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(web, more); err != nil {
		t.Fatal(err)
	}
	want := before + len(more)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`Number(%s.dataset.bytesUp) >= %d`, card, want),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("the page did not follow the traffic past %d bytes up (it shows %d): %v", want, countUp(t, ctx, card), err)
	}

	// Charts: the session RTT and each tunnel's rates are drawn (dygraphs draws
	// on canvases), and a few seconds of history fill them.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`sessionHistory.length >= 8 && `+
		`document.querySelector("#chart-rtt canvas") !== null && document.querySelector("#chart-loss canvas") !== null && `+
		`document.querySelectorAll("article.tunnel .chart canvas").length >= 3`,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatal("charts not drawn:", err)
	}
	rtt, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#sessions tbody").textContent`))
	if err != nil || !strings.Contains(rtt, " ms") {
		t.Fatalf("sessions table: %q, %v", rtt, err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal("screenshot:", err)
	}
	path := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	if docs := os.Getenv("QUICTUN_DASHBOARD_SCREENSHOT"); docs != "" {
		if err := os.WriteFile(docs, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The kill button closes the tunnel: the application sees its end, the card goes.
	must(t, "kill", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`article[data-uuid="`+webID+`"] button.kill`))))
	web.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := web.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("killed tunnel: read %d bytes, %v", n, err)
	}
	must(t, "the card goes", chromedp.Do(ctx, chromedp.WaitNotPresent(chromedp.CSS(`article[data-uuid="`+webID+`"]`))))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("article.tunnel").length`)); err != nil || n != 2 {
		t.Fatalf("tunnel cards after the kill: %d, %v", n, err)
	}

	cancel()
	reading.Wait()
	consoleMu.Lock()
	defer consoleMu.Unlock()
	// The wrong token's 401 is the one error a browser logs on its own.
	for _, m := range consoleErrors {
		if !strings.Contains(m, "401") {
			t.Errorf("browser console: %s", m)
		}
	}
}

func getAuthJSON(t *testing.T, url, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func countUp(t *testing.T, ctx context.Context, card string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Number(`+card+`.dataset.bytesUp)`))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pumpEcho sends 32 KiB every 20 ms (about 13 Mbit/s) through an echoing
// tunnel and reads it back, until stop.
func pumpEcho(c net.Conn, stop <-chan struct{}) {
	buf := make([]byte, 32<<10)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
	}
}
