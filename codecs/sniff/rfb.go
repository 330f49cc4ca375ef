package sniff

import "strconv"

// RFB recognises the Remote Framebuffer protocol (VNC, RFC 6143 section 7.1.1). The server
// speaks first with its ProtocolVersion, "RFB xxx.yyy\n" (12 bytes, three-digit major and
// minor), and the client answers with the version it chose in the same form.
//
// Properties: version (the server's, "3.8"), clientVersion (the one the client chose,
// which is the version the session runs).
type RFB struct{}

// Name implements Sniffer.
func (RFB) Name() string { return "rfb" }

// rfbVersionLen is the length of "RFB 003.008\n".
const rfbVersionLen = 12

// Sniff implements Sniffer.
func (RFB) Sniff(fromClient, fromServer []byte) Result {
	var p props
	server, serverOK := rfbVersion(fromServer)
	client, clientOK := rfbVersion(fromClient)
	if !serverOK || !clientOK {
		return p.result(NotMine, false)
	}
	if server == "" && client == "" {
		return p.result(Undecided, false)
	}
	p.setString("version", server)
	p.setString("clientVersion", client)
	return p.result(Match, server != "" && client != "")
}

// rfbVersion reads a ProtocolVersion message. ok is false as soon as b departs from the
// form; version is "" while the message is incomplete.
func rfbVersion(b []byte) (version string, ok bool) {
	const form = "RFB ddd.ddd\n"
	n := min(len(b), rfbVersionLen)
	for i := range n {
		if form[i] == 'd' && !isDigit(b[i]) || form[i] != 'd' && form[i] != b[i] {
			return "", false
		}
	}
	if n < rfbVersionLen {
		return "", true
	}
	major, _ := strconv.Atoi(string(b[4:7]))
	minor, _ := strconv.Atoi(string(b[8:11]))
	return strconv.Itoa(major) + "." + strconv.Itoa(minor), true
}
