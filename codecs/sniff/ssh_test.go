package sniff

import (
	"bytes"
	"strings"
	"testing"
)

func sshCases() []sniffCase {
	client := []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n")
	server := []byte("SSH-2.0-dropbear_2022.83\r\n")
	both := map[string]string{"clientVersion": "OpenSSH_9.2p1", "serverVersion": "dropbear_2022.83"}
	long := []byte("SSH-2.0-" + strings.Repeat("x", 400) + "\r\n")
	return []sniffCase{
		{name: "nothing yet", verdict: Undecided},
		{name: "prefix in part", client: []byte("SS"), verdict: Undecided},
		{name: "protoversion in part", client: []byte("SSH-2."), verdict: Undecided},
		{name: "both banners", client: client, server: server, verdict: Match, done: true, props: both},
		{name: "server first", server: server, verdict: Match, props: map[string]string{"serverVersion": "dropbear_2022.83"}},
		{name: "client first", client: client, verdict: Match, props: map[string]string{"clientVersion": "OpenSSH_9.2p1"}},
		{name: "banner line not complete", client: []byte("SSH-2.0-OpenSS"), verdict: Match},
		{name: "old protocol 1.99, LF only", client: []byte("SSH-1.99-PuTTY_Release_0.78\n"), server: server, verdict: Match, done: true,
			props: map[string]string{"clientVersion": "PuTTY_Release_0.78", "serverVersion": "dropbear_2022.83"}},
		{name: "server lines before its banner", client: client, server: cat([]byte("Welcome\r\nno SSH- here\r\n"), server),
			verdict: Match, done: true, props: both},
		{name: "client must not send other lines", client: cat([]byte("hello\r\n"), client), verdict: NotMine},
		{name: "bad protoversion", client: []byte("SSH-two-x\r\n"), verdict: NotMine},
		{name: "protoversion too long", client: []byte("SSH-2.0.0.0.0.0.0-x\r\n"), verdict: NotMine},
		{name: "smtp", client: []byte("EHLO me\r\n"), server: []byte("220 mail ESMTP\r\n"), verdict: NotMine},
		{name: "smtp server, client silent", server: []byte("220 mail ESMTP\r\n"), verdict: Undecided},
		{name: "server never sends a banner", server: bytes.Repeat([]byte("line\r\n"), 2000), verdict: NotMine},
		{name: "server line without end", server: bytes.Repeat([]byte("x"), sshMaxPreBanner+1), verdict: NotMine},
		{name: "server not SSH after client banner", client: client, server: bytes.Repeat([]byte("x"), sshMaxPreBanner+1), verdict: NotMine},
		{name: "over-long banner", client: long, server: server, verdict: Match, done: true,
			props: map[string]string{"clientVersion": strings.Repeat("x", sshMaxLine-len("SSH-2.0-")), "serverVersion": "dropbear_2022.83"}},
		{name: "control characters in software", client: []byte("SSH-2.0-a\x1bb\r\n"), server: server, verdict: Match, done: true,
			props: map[string]string{"clientVersion": "a?b", "serverVersion": "dropbear_2022.83"}},
		{name: "empty software", client: []byte("SSH-2.0-\r\n"), server: server, verdict: Match, done: true,
			props: map[string]string{"serverVersion": "dropbear_2022.83"}},
	}
}

func TestSSHCases(t *testing.T) { runSniffCases(t, SSH{}, sshCases()) }
