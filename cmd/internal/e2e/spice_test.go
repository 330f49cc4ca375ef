package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/livetest"
)

// Real SPICE through the real binaries: qemu's SPICE server on a UNIX socket
// behind quictun-server, a real viewer under Xvfb connecting to quictun-client
// over TCP. The server's API must show every channel as spice, the main
// channel with the VM's name and UUID, and all of them with one sessionId.
func TestSPICEThroughTheTunnel(t *testing.T) {
	livetest.RequireTools(t, "qemu-system-x86_64", "Xvfb")
	viewer := livetest.SPICEViewer(t)
	const vmName, vmUUID = "quictun-e2e-vm", "0f6c1a1e-3b7d-4c2a-8e95-7d1b2c3a4f5e"
	sock := filepath.Join(t.TempDir(), "spice.sock")
	livetest.StartProcess(t, nil, "qemu-system-x86_64",
		"-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-S", "-display", "none",
		"-vga", "qxl", "-name", vmName, "-uuid", vmUUID,
		"-spice", "unix=on,addr="+sock+",disable-ticketing=on")
	livetest.WaitForSocket(t, "unix", sock)

	udp, apiAddr, listen := freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp, "--httpd-listen-on", apiAddr)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "unix:"+sock, "--server-fingerprint", fp)
	cli.waitLog(t, "quictun-client listening")

	display := livetest.StartXvfb(t)
	livetest.StartProcess(t, livetest.GUIEnv(t, display), viewer, "spice://"+listen)

	type tunnel struct {
		Protocol           string            `json:"protocol"`
		ProtocolProperties map[string]string `json:"protocolProperties"`
		ServerAppAddr      string            `json:"serverAppAddr"`
	}
	var tunnels []tunnel
	var main map[string]string
	ok := livetest.WaitFor(60*time.Second, func() bool {
		tunnels = nil
		getJSON(t, "http://"+apiAddr+"/tunnels", &tunnels)
		main = nil
		others := 0
		for _, tn := range tunnels {
			if tn.Protocol != "spice" {
				return false
			}
			if tn.ProtocolProperties["channelType"] == "main" {
				main = tn.ProtocolProperties
			} else {
				others++
			}
		}
		return main != nil && main["serverUUID"] != "" && others >= 2
	})
	if !ok {
		t.Fatalf("the viewer's channels were not all recognised: %+v", tunnels)
	}
	for k, want := range map[string]string{"version": "2.2", "serverName": vmName, "serverUUID": vmUUID} {
		if main[k] != want {
			t.Errorf("main channel %s = %q, want %q", k, main[k], want)
		}
	}
	for _, tn := range tunnels {
		if tn.ProtocolProperties["sessionId"] != main["sessionId"] || len(main["sessionId"]) != 8 {
			t.Errorf("%s channel: sessionId %q, main's %q", tn.ProtocolProperties["channelType"], tn.ProtocolProperties["sessionId"], main["sessionId"])
		}
		if tn.ServerAppAddr != "unix:"+sock {
			t.Errorf("serverAppAddr %q", tn.ServerAppAddr)
		}
	}
	t.Logf("%d SPICE channels through quictun, session %s", len(tunnels), main["sessionId"])
}
