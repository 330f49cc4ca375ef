package sniff

import (
	"maps"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// replayOutcome is what the engine would conclude from a capture.
type replayOutcome struct {
	name   string // the matching sniffer, "" if none matched
	result Result // its last answer
	calls  int    // Sniff calls made
	// clientLen and serverLen are how much of each stream had been fed when the replay
	// stopped: what the engine would have copied to the sniffer actor.
	clientLen, serverLen int
}

// replay feeds a capture to the sniffers chunk by chunk, the way the engine's sniffer
// actor does: after each chunk it asks every sniffer that has not said NotMine, in order,
// until one matches, and then only that one, until it is Done. With t non-nil it checks the
// contract on the way: a match stays a match, Done comes only with Match, and properties
// once reported keep their value.
func replay(t *testing.T, sniffers []Sniffer, c capture) replayOutcome {
	if t != nil {
		t.Helper()
	}
	var fromClient, fromServer []byte
	active := slices.Clone(sniffers)
	var out replayOutcome
	var matched Sniffer
	for _, ch := range c.chunks {
		if ch.fromServer {
			fromServer = append(fromServer, ch.data[:min(len(ch.data), captureLimit-len(fromServer))]...)
		} else {
			fromClient = append(fromClient, ch.data[:min(len(ch.data), captureLimit-len(fromClient))]...)
		}
		out.clientLen, out.serverLen = len(fromClient), len(fromServer)
		if matched != nil {
			r := matched.Sniff(fromClient, fromServer)
			out.calls++
			if t != nil {
				if r.Verdict != Match {
					t.Fatalf("%s: verdict went from match to %v after more bytes", matched.Name(), r.Verdict)
				}
				for k, v := range out.result.Props {
					if r.Props[k] != v {
						t.Fatalf("%s: property %s changed from %q to %q", matched.Name(), k, v, r.Props[k])
					}
				}
			}
			out.result = r
			if r.Done {
				return out
			}
			continue
		}
		for i := 0; i < len(active); {
			s := active[i]
			r := s.Sniff(fromClient, fromServer)
			out.calls++
			if t != nil && r.Done && r.Verdict != Match {
				t.Fatalf("%s: Done with verdict %v", s.Name(), r.Verdict)
			}
			switch r.Verdict {
			case NotMine:
				active = slices.Delete(active, i, i+1)
				continue
			case Match:
				matched, out.name, out.result = s, s.Name(), r
			}
			if matched != nil {
				break
			}
			i++
		}
		if out.result.Done {
			return out
		}
	}
	return out
}

// checkProps reports every difference between got and want.
func checkProps(t *testing.T, what string, got, want map[string]string) bool {
	t.Helper()
	if maps.Equal(got, want) {
		return true
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: %s = %q, want %q", what, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected property %s = %q", what, k, g)
		}
	}
	return false
}

// fixtureCases are the recorded real captures in testdata/ (see testdata/README.md) and
// what each must be recognised as.
var fixtureCases = []struct {
	file     string
	protocol string
	props    map[string]string
}{
	// qemu 7.2 (libspice-server 0.15.1) and remote-viewer 11.0 (spice-gtk 0.42): one
	// viewer session, so every channel carries the session id the main channel got.
	{"spice-main.cap", "spice", map[string]string{"version": "2.2", "channelType": "main", "channelId": "0",
		"sessionId": "6ee01853", "serverName": "quictun-sniff-vm", "serverUUID": "5a1e0c2d-7b3f-4e8a-9c61-0d2f4b6a8e13"}},
	{"spice-display.cap", "spice", map[string]string{"version": "2.2", "channelType": "display", "channelId": "0", "sessionId": "6ee01853"}},
	{"spice-inputs.cap", "spice", map[string]string{"version": "2.2", "channelType": "inputs", "channelId": "0", "sessionId": "6ee01853"}},
	{"spice-cursor.cap", "spice", map[string]string{"version": "2.2", "channelType": "cursor", "channelId": "0", "sessionId": "6ee01853"}},
	{"ssh-openssh.cap", "ssh", map[string]string{"clientVersion": "OpenSSH_9.2p1", "serverVersion": "OpenSSH_9.2p1"}},
	{"tls-curl.cap", "tls", map[string]string{"sni": "sniff.example", "alpn": "h2,http/1.1", "tlsVersion": "1.3"}},
	{"tls-openssl-1.2.cap", "tls", map[string]string{"sni": "legacy.example", "alpn": "http/1.1", "tlsVersion": "1.2"}},
	{"http-curl.cap", "http", map[string]string{"method": "GET", "host": "app.example", "path": "/v1/tunnels", "version": "1.1"}},
	{"http-curl-proxy.cap", "http", map[string]string{"method": "POST", "host": "upstream.example", "path": "/form", "version": "1.1"}},
	{"rfb-qemu-remote-viewer.cap", "rfb", map[string]string{"version": "3.8", "clientVersion": "3.8"}},
}

// TestFixtures replays every real capture through the default sniffers as the engine
// would, and checks the protocol, the properties, and that every other sniffer turns the
// whole capture down.
func TestFixtures(t *testing.T) {
	for _, tc := range fixtureCases {
		t.Run(tc.file, func(t *testing.T) {
			c := loadCapture(t, "testdata/"+tc.file)
			o := replay(t, Default(), c)
			if o.name != tc.protocol {
				t.Fatalf("recognised as %q (%v), want %q", o.name, o.result.Verdict, tc.protocol)
			}
			if !o.result.Done {
				t.Errorf("not done at the end of the capture")
			}
			checkProps(t, tc.file, o.result.Props, tc.props)
			fromClient, fromServer := c.streams()
			for _, s := range Default() {
				if s.Name() == tc.protocol {
					continue
				}
				if r := s.Sniff(fromClient, fromServer); r.Verdict != NotMine || r.Props != nil {
					t.Errorf("%s says %v %v about a %s capture", s.Name(), r.Verdict, r.Props, tc.protocol)
				}
			}
		})
	}
}
