package sniff

import "testing"

func rfbCases() []sniffCase {
	return []sniffCase{
		{name: "nothing yet", verdict: Undecided},
		{name: "server version in part", server: []byte("RFB 003.0"), verdict: Undecided},
		{name: "server version", server: []byte("RFB 003.008\n"), verdict: Match, props: map[string]string{"version": "3.8"}},
		{name: "both versions", server: []byte("RFB 003.008\n\x01\x02"), client: []byte("RFB 003.007\n"), verdict: Match, done: true,
			props: map[string]string{"version": "3.8", "clientVersion": "3.7"}},
		{name: "apple version", server: []byte("RFB 003.889\n"), verdict: Match, props: map[string]string{"version": "3.889"}},
		{name: "client version seen first", client: []byte("RFB 003.008\n"), verdict: Match, props: map[string]string{"clientVersion": "3.8"}},
		{name: "short form", server: []byte("RFB 3.8\n"), verdict: NotMine},
		{name: "ssh server", server: []byte("SSH-2.0-x\r\n"), verdict: NotMine},
		{name: "client speaks something else", client: []byte("GET / HTTP/1.1\r\n"), verdict: NotMine},
		{name: "client departs from form", server: []byte("RFB 003.008\n"), client: []byte("RFB 003,008\n"), verdict: NotMine},
		{name: "no newline", server: []byte("RFB 003.008 "), verdict: NotMine},
	}
}

func TestRFBCases(t *testing.T) { runSniffCases(t, RFB{}, rfbCases()) }
