package sniff

import "bytes"

// SSH recognises SSH by the version exchange of RFC 4253 section 4.2: each side opens with
// "SSH-protoversion-softwareversion SP comments CR LF". The server may send other lines
// first (they must not begin with "SSH-"); the client may not. Either side's banner is
// enough to decide, so a server that speaks first is recognised before the client says
// anything.
//
// Properties: clientVersion and serverVersion, the softwareversion part of each banner
// ("OpenSSH_9.2p1"), set as each banner line completes.
type SSH struct{}

// Name implements Sniffer.
func (SSH) Name() string { return "ssh" }

const (
	sshPrefix = "SSH-"
	// sshMaxLine is the longest version line RFC 4253 allows, CR LF included.
	sshMaxLine = 255
	// sshMaxProtoVersion bounds the protoversion field ("2.0", "1.99").
	sshMaxProtoVersion = 8
	// sshMaxPreBanner bounds the lines a server may send before its banner, so that a
	// server speaking another line-based protocol is turned down in bounded time.
	sshMaxPreBanner = 8 << 10
)

// sshSide is what one direction's bytes say about SSH.
type sshSide int

const (
	sshNeedMore sshSide = iota // nothing decisive yet
	sshNot                     // this direction is not speaking SSH
	sshBanner                  // "SSH-protoversion-" seen
)

// Sniff implements Sniffer.
func (SSH) Sniff(fromClient, fromServer []byte) Result {
	var p props
	client, clientSoftware, clientDone := scanSSHBanner(fromClient, false)
	if client == sshNot {
		return p.result(NotMine, false)
	}
	server, serverSoftware, serverDone := scanSSHBanner(fromServer, true)
	// Each side's state only moves forward as bytes arrive, so NotMine taking precedence
	// keeps NotMine final, as the engine expects once it stops asking.
	switch {
	case server == sshNot:
		return p.result(NotMine, false)
	case client != sshBanner && server != sshBanner:
		return p.result(Undecided, false)
	}
	if clientDone {
		p.set("clientVersion", clientSoftware)
	}
	if serverDone {
		p.set("serverVersion", serverSoftware)
	}
	return p.result(Match, clientDone && serverDone)
}

// scanSSHBanner finds the version line in one direction. allowPreLines admits the lines a
// server may send before its banner. done is true once the banner line is complete (or
// longer than any valid one, which then yields what fit).
func scanSSHBanner(b []byte, allowPreLines bool) (side sshSide, software []byte, done bool) {
	pos := 0
	for {
		line := b[pos:]
		if !hasPrefixPart(line, sshPrefix) {
			if !allowPreLines {
				return sshNot, nil, false
			}
			nl := bytes.IndexByte(line, '\n')
			if nl < 0 {
				if len(b) > sshMaxPreBanner {
					return sshNot, nil, false
				}
				return sshNeedMore, nil, false
			}
			pos += nl + 1
			if pos > sshMaxPreBanner {
				return sshNot, nil, false
			}
			continue
		}
		if len(line) <= len(sshPrefix) {
			return sshNeedMore, nil, false
		}
		rest := line[len(sshPrefix):]
		n := 0
		for n < len(rest) && n <= sshMaxProtoVersion && (rest[n] == '.' || rest[n] >= '0' && rest[n] <= '9') {
			n++
		}
		switch {
		case n == len(rest) && n <= sshMaxProtoVersion:
			return sshNeedMore, nil, false
		case n == 0 || n > sshMaxProtoVersion || rest[n] != '-':
			return sshNot, nil, false
		}
		software = rest[n+1:]
		if len(line) > sshMaxLine {
			line = line[:sshMaxLine]
			software = software[:min(len(software), sshMaxLine-len(sshPrefix)-n-1)]
		}
		nl := bytes.IndexByte(software, '\n')
		if nl < 0 && len(line) < sshMaxLine {
			return sshBanner, nil, false
		}
		if nl >= 0 {
			software = software[:nl]
		}
		software = bytes.TrimSuffix(software, []byte("\r"))
		if sp := bytes.IndexByte(software, ' '); sp >= 0 {
			software = software[:sp]
		}
		return sshBanner, software, true
	}
}
