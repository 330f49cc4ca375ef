package sniff

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
)

// SPICE recognises the SPICE remote display protocol (spice-protocol's protocol.h and
// enums.h; all integers little-endian). The client opens every channel with a
// SpiceLinkHeader ("REDQ", major, minor, size) and a SpiceLinkMess (connection id, channel
// type and id, capabilities). A viewer opens one main channel and then one tunnel per
// further channel, each carrying the session id in its connection id; so sessionId lets
// an operator group a viewer's tunnels. The main channel itself learns its session id from
// the server: after the server's SpiceLinkReply, the client's ticket and the server's link
// result, the first message is SPICE_MSG_MAIN_INIT, followed by SPICE_MSG_MAIN_NAME and
// SPICE_MSG_MAIN_UUID when the client announced SPICE_MAIN_CAP_NAME_AND_UUID.
//
// Properties: version ("2.2"), channelType ("main", "display", ...), channelId, sessionId
// (8 hex digits), and on the main channel serverName and serverUUID.
type SPICE struct{}

// Name implements Sniffer.
func (SPICE) Name() string { return "spice" }

// Sizes and codes from spice-protocol.
const (
	spiceMagic          = "REDQ"
	spiceLinkHeaderLen  = 16 // magic, major, minor, size
	spiceLinkMessLen    = 18 // connection_id u32, channel_type u8, channel_id u8, 3 x u32
	spiceLinkReplyLen   = 4 + 162 + 12
	spiceLinkResultLen  = 4
	spiceAuthMechLen    = 4
	spiceMiniHeaderLen  = 6  // type u16, size u32
	spiceFullHeaderLen  = 18 // serial u64, type u16, size u32, sub_list u32
	spiceChannelMain    = 1
	spiceAuthSASL       = 2 // SPICE_COMMON_CAP_AUTH_SASL as an auth mechanism
	spiceMsgMainInit    = 103
	spiceMsgMainChanls  = 104
	spiceMsgMainName    = 113
	spiceMsgMainUUID    = 114
	spiceMainInitMinLen = 4 // session_id is the first field of SpiceMsgMainInit
	spiceUUIDLen        = 16

	spiceCapAuthSelection = 0 // SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION
	spiceCapMiniHeader    = 3 // SPICE_COMMON_CAP_MINI_HEADER
	spiceMainCapNameUUID  = 1 // SPICE_MAIN_CAP_NAME_AND_UUID

	// spiceMaxMainMessages bounds how many server messages on the main channel we look at
	// for INIT, NAME and UUID: the server sends INIT first and queues NAME and UUID right
	// behind it, so they come within the first few messages or not at all.
	spiceMaxMainMessages = 32
)

var spiceChannelNames = [...]string{
	1: "main", 2: "display", 3: "inputs", 4: "cursor", 5: "playback", 6: "record",
	7: "tunnel", 8: "smartcard", 9: "usbredir", 10: "port", 11: "webdav",
}

func spiceChannelName(t uint8) string {
	if int(t) < len(spiceChannelNames) && spiceChannelNames[t] != "" {
		return spiceChannelNames[t]
	}
	return strconv.Itoa(int(t))
}

// spiceLink is the part of a link message (the client's SpiceLinkMess or the server's
// SpiceLinkReply) that decides how the rest of the channel is framed.
type spiceLink struct {
	end         int    // offset just past the link message in its stream
	commonCaps0 uint32 // first word of the common capabilities (0 if none)
	chanCaps0   uint32 // first word of the channel capabilities (0 if none)
}

// Sniff implements Sniffer.
func (SPICE) Sniff(fromClient, fromServer []byte) Result {
	var p props
	c := fromClient
	if !hasPrefixPart(c, spiceMagic) {
		return p.result(NotMine, false)
	}
	if len(c) < spiceLinkHeaderLen {
		return p.result(Undecided, false)
	}
	major := binary.LittleEndian.Uint32(c[4:])
	minor := binary.LittleEndian.Uint32(c[8:])
	size := binary.LittleEndian.Uint32(c[12:])
	if size < spiceLinkMessLen {
		return p.result(NotMine, false)
	}
	// Decide only on a whole fixed part of the SpiceLinkMess (clients send it with the
	// header in one write): the capability counts must fit the size the header gave.
	if len(c) < spiceLinkHeaderLen+spiceLinkMessLen {
		return p.result(Undecided, false)
	}
	mess := c[spiceLinkHeaderLen:]
	connectionID := binary.LittleEndian.Uint32(mess[0:])
	channelType := mess[4]
	channelID := mess[5]
	client, ok := parseSpiceCaps(mess, size, 6, spiceLinkHeaderLen)
	if !ok {
		return p.result(NotMine, false)
	}
	p.setString("version", strconv.FormatUint(uint64(major), 10)+"."+strconv.FormatUint(uint64(minor), 10))
	p.setString("channelType", spiceChannelName(channelType))
	p.setString("channelId", strconv.Itoa(int(channelID)))
	if channelType != spiceChannelMain {
		// Every other channel carries the session id the main channel was given.
		p.setString("sessionId", spiceSessionID(connectionID))
		return p.result(Match, true)
	}
	done := sniffSpiceMain(&p, c, fromServer, client)
	return p.result(Match, done)
}

// parseSpiceCaps reads the capability counts at link[countsAt:] (num_common_caps,
// num_channel_caps, caps_offset) of a link message of size bytes, and the first word of
// each capability set. The caps must lie inside the message; a message that is not fully
// captured yet yields zero words for caps beyond the capture, which only delays what
// depends on them. ok is false for a message that contradicts its own size.
func parseSpiceCaps(link []byte, size uint32, countsAt, headerLen int) (spiceLink, bool) {
	l := spiceLink{end: spiceEnd(headerLen, size)}
	if len(link) < countsAt+12 {
		return l, true
	}
	nCommon := uint64(binary.LittleEndian.Uint32(link[countsAt:]))
	nChannel := uint64(binary.LittleEndian.Uint32(link[countsAt+4:]))
	offset := uint64(binary.LittleEndian.Uint32(link[countsAt+8:]))
	if offset+4*(nCommon+nChannel) > uint64(size) {
		return l, false
	}
	if nCommon > 0 && offset+4 <= uint64(len(link)) {
		l.commonCaps0 = binary.LittleEndian.Uint32(link[offset:])
	}
	chanAt := offset + 4*nCommon
	if nChannel > 0 && chanAt+4 <= uint64(len(link)) {
		l.chanCaps0 = binary.LittleEndian.Uint32(link[chanAt:])
	}
	return l, true
}

// spiceEnd is headerLen + size without overflow: where int has 32 bits a size near
// 4 GiB would wrap to a negative offset, which then indexes out of range. An end past
// what int holds is never captured, so it is clamped to math.MaxInt.
func spiceEnd(headerLen int, size uint32) int {
	end := uint64(headerLen) + uint64(size)
	if end > math.MaxInt {
		return math.MaxInt
	}
	return int(end)
}

func spiceSessionID(id uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	return hex.EncodeToString(b[:])
}

func hasCap(word uint32, bit uint) bool { return word&(1<<bit) != 0 }

// sniffSpiceMain follows the main channel past the link handshake to the server's first
// messages and records sessionId, serverName and serverUUID. It reports whether there is
// nothing more to learn. fromClient is known to hold a whole SpiceLinkHeader and the fixed
// part of the SpiceLinkMess.
func sniffSpiceMain(p *props, fromClient, fromServer []byte, client spiceLink) bool {
	s := fromServer
	if len(s) < spiceLinkHeaderLen {
		return false
	}
	if string(s[:4]) != spiceMagic {
		return true // not a SPICE server answering: nothing more to learn
	}
	size := binary.LittleEndian.Uint32(s[12:])
	if size < spiceLinkReplyLen {
		return true
	}
	if len(s) < spiceLinkHeaderLen+4 {
		return false
	}
	if binary.LittleEndian.Uint32(s[spiceLinkHeaderLen:]) != 0 {
		return true // SpiceLinkReply.error: the server refused the link
	}
	if len(s) < spiceLinkHeaderLen+spiceLinkReplyLen {
		return false
	}
	server, ok := parseSpiceCaps(s[spiceLinkHeaderLen:], size, 4+162, spiceLinkHeaderLen)
	if !ok {
		return true
	}
	if client.end > len(fromClient) || server.end > len(s) {
		return false // caps not all captured yet
	}
	if hasCap(client.commonCaps0, spiceCapAuthSelection) && hasCap(server.commonCaps0, spiceCapAuthSelection) {
		// The client names its auth mechanism first. SASL puts an exchange we do not
		// follow between the reply and the link result.
		if len(fromClient)-client.end < spiceAuthMechLen {
			return false
		}
		if binary.LittleEndian.Uint32(fromClient[client.end:]) == spiceAuthSASL {
			return true
		}
	}
	at := server.end
	if len(s)-at < spiceLinkResultLen {
		return false
	}
	if binary.LittleEndian.Uint32(s[at:]) != 0 {
		return true // link result: ticket refused or other link error
	}
	at += spiceLinkResultLen

	mini := hasCap(client.commonCaps0, spiceCapMiniHeader) && hasCap(server.commonCaps0, spiceCapMiniHeader)
	wantNameUUID := hasCap(client.chanCaps0, spiceMainCapNameUUID)
	var seenInit, seenName, seenUUID bool
	for range spiceMaxMainMessages {
		typ, body, next, ok := nextSpiceMessage(s, at, mini)
		if !ok {
			return false // the next message is not all captured yet
		}
		at = next
		switch typ {
		// The first of each counts: a server that repeated one must not change what
		// a shorter capture already reported (the sniffer re-reads from the start).
		case spiceMsgMainInit:
			if !seenInit && len(body) >= spiceMainInitMinLen {
				p.setString("sessionId", spiceSessionID(binary.LittleEndian.Uint32(body)))
				seenInit = true
			}
		case spiceMsgMainName:
			if name, ok := spiceName(body); ok && !seenName {
				p.set("serverName", name)
				seenName = true
			}
		case spiceMsgMainUUID:
			if !seenUUID && len(body) >= spiceUUIDLen {
				p.setString("serverUUID", formatUUID(body[:spiceUUIDLen]))
				seenUUID = true
			}
		case spiceMsgMainChanls:
			// The server answers the client's ATTACH_CHANNELS, which the client sends
			// after it got INIT; NAME and UUID were queued with INIT and so came before.
			if seenInit {
				return true
			}
		}
		if seenInit && (!wantNameUUID || (seenName && seenUUID)) {
			return true
		}
	}
	return true // INIT, NAME and UUID come first or not at all: stop waiting
}

// nextSpiceMessage frames the message at s[at:] with the mini or the full data header. ok
// is false while the header or body is not all in s.
func nextSpiceMessage(s []byte, at int, mini bool) (typ uint16, body []byte, next int, ok bool) {
	headerLen := spiceFullHeaderLen
	if mini {
		headerLen = spiceMiniHeaderLen
	}
	if at < 0 || len(s)-at < headerLen {
		return 0, nil, 0, false
	}
	h := s[at:]
	var size uint32
	if mini {
		typ = binary.LittleEndian.Uint16(h[0:])
		size = binary.LittleEndian.Uint32(h[2:])
	} else {
		typ = binary.LittleEndian.Uint16(h[8:])
		size = binary.LittleEndian.Uint32(h[10:])
	}
	if uint64(size) > uint64(len(h)-headerLen) {
		return 0, nil, 0, false
	}
	body = h[headerLen : headerLen+int(size)]
	return typ, body, at + headerLen + int(size), true
}

// spiceName extracts the name from a SpiceMsgMainName: name_len u32, then the name, which
// the server sends NUL-terminated.
func spiceName(body []byte) ([]byte, bool) {
	if len(body) < 4 {
		return nil, false
	}
	n := uint64(binary.LittleEndian.Uint32(body))
	name := body[4:]
	if n < uint64(len(name)) {
		name = name[:n]
	}
	for len(name) > 0 && name[len(name)-1] == 0 {
		name = name[:len(name)-1]
	}
	return name, true
}

// formatUUID writes 16 bytes in the canonical 8-4-4-4-12 form.
func formatUUID(b []byte) string {
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
