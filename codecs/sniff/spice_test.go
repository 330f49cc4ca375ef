package sniff

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// Builders for SPICE byte streams laid out as spice-protocol's protocol.h describes.

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func spiceHeader(size uint32) []byte {
	return cat([]byte(spiceMagic), le32(2), le32(2), le32(size))
}

// spiceLinkMess is a client's SpiceLinkHeader and SpiceLinkMess.
func spiceLinkMess(connID uint32, chType, chID uint8, common, channel []uint32) []byte {
	body := cat(le32(connID), []byte{chType, chID}, le32(uint32(len(common))), le32(uint32(len(channel))), le32(spiceLinkMessLen))
	for _, c := range append(common, channel...) {
		body = append(body, le32(c)...)
	}
	return cat(spiceHeader(uint32(len(body))), body)
}

// spiceLinkReply is a server's SpiceLinkHeader and SpiceLinkReply (zero public key).
func spiceLinkReply(errCode uint32, common, channel []uint32) []byte {
	body := cat(le32(errCode), make([]byte, 162), le32(uint32(len(common))), le32(uint32(len(channel))), le32(spiceLinkReplyLen))
	for _, c := range append(common, channel...) {
		body = append(body, le32(c)...)
	}
	return cat(spiceHeader(uint32(len(body))), body)
}

func spiceMsg(mini bool, typ uint16, body []byte) []byte {
	if mini {
		return cat(binary.LittleEndian.AppendUint16(nil, typ), le32(uint32(len(body))), body)
	}
	return cat(make([]byte, 8), binary.LittleEndian.AppendUint16(nil, typ), le32(uint32(len(body))), le32(0), body)
}

func spiceInit(session uint32) []byte { return cat(le32(session), make([]byte, 28)) }

func spiceNameBody(name string) []byte {
	return cat(le32(uint32(len(name)+1)), []byte(name), []byte{0})
}

var testUUID = []byte{0x5a, 0x1e, 0x0c, 0x2d, 0x7b, 0x3f, 0x4e, 0x8a, 0x9c, 0x61, 0x0d, 0x2f, 0x4b, 0x6a, 0x8e, 0x13}

const (
	capsMini         = 1 << spiceCapMiniHeader
	capsAuthSelSpice = 1<<spiceCapAuthSelection | 1<<1 // auth selection + AUTH_SPICE
	capsNameUUID     = 1 << spiceMainCapNameUUID
	spiceTicket      = 128
)

// spiceMainServer is a server's side of a main channel: reply, link result, messages.
func spiceMainServer(serverCommon uint32, msgs ...[]byte) []byte {
	return cat(spiceLinkReply(0, []uint32{serverCommon}, []uint32{capsNameUUID}), le32(0), cat(msgs...))
}

func spiceCases() []sniffCase {
	mainClient := cat(spiceLinkMess(0, spiceChannelMain, 0, []uint32{capsMini}, []uint32{capsNameUUID}), make([]byte, spiceTicket))
	mainClientFull := cat(spiceLinkMess(0, spiceChannelMain, 0, []uint32{0}, []uint32{capsNameUUID}), make([]byte, spiceTicket))
	mainClientNoName := cat(spiceLinkMess(0, spiceChannelMain, 0, []uint32{capsMini}, nil), make([]byte, spiceTicket))
	mainLink := spiceLinkMess(0, spiceChannelMain, 0, []uint32{capsMini | capsAuthSelSpice}, []uint32{capsNameUUID})
	allProps := map[string]string{"version": "2.2", "channelType": "main", "channelId": "0", "sessionId": "0bb5e56c",
		"serverName": "vm1", "serverUUID": "5a1e0c2d-7b3f-4e8a-9c61-0d2f4b6a8e13"}
	linkProps := map[string]string{"version": "2.2", "channelType": "main", "channelId": "0"}
	withSession := map[string]string{"version": "2.2", "channelType": "main", "channelId": "0", "sessionId": "0bb5e56c"}
	mini := func(typ uint16, body []byte) []byte { return spiceMsg(true, typ, body) }
	full := func(typ uint16, body []byte) []byte { return spiceMsg(false, typ, body) }
	badName := "evil\x1b[31m\xff" + strings.Repeat("n", 400)

	return []sniffCase{
		{name: "nothing yet", verdict: Undecided},
		{name: "magic in part", client: []byte("RE"), verdict: Undecided},
		{name: "other magic", client: []byte("REDX"), verdict: NotMine},
		{name: "http", client: []byte("GET / HTTP/1.1\r\n"), verdict: NotMine},
		{name: "server speaks first", server: []byte("RFB 003.008\n"), verdict: Undecided},
		{name: "header only", client: spiceHeader(30), verdict: Undecided},
		{name: "link message too small", client: spiceHeader(10), verdict: NotMine},
		{name: "caps beyond message", client: cat(spiceHeader(18), le32(0), []byte{1, 0}, le32(1), le32(0), le32(18)), verdict: NotMine},
		{name: "display channel", client: spiceLinkMess(0xdeadbeef, 2, 1, []uint32{capsMini}, nil), verdict: Match, done: true,
			props: map[string]string{"version": "2.2", "channelType": "display", "channelId": "1", "sessionId": "deadbeef"}},
		{name: "unknown channel type", client: spiceLinkMess(7, 42, 0, nil, nil), verdict: Match, done: true,
			props: map[string]string{"version": "2.2", "channelType": "42", "channelId": "0", "sessionId": "00000007"}},
		{name: "main, no server yet", client: mainClient, verdict: Match, props: linkProps},
		{name: "main, mini header", client: mainClient,
			server:  spiceMainServer(capsMini, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c)), mini(spiceMsgMainName, spiceNameBody("vm1")), mini(spiceMsgMainUUID, testUUID)),
			verdict: Match, done: true, props: allProps},
		{name: "main, full header (client without mini cap)", client: mainClientFull,
			server:  spiceMainServer(capsMini, full(spiceMsgMainInit, spiceInit(0x0bb5e56c)), full(spiceMsgMainName, spiceNameBody("vm1")), full(spiceMsgMainUUID, testUUID)),
			verdict: Match, done: true, props: allProps},
		{name: "main, full header (server without mini cap)", client: mainClient,
			server:  spiceMainServer(0, full(spiceMsgMainInit, spiceInit(0x0bb5e56c)), full(spiceMsgMainName, spiceNameBody("vm1")), full(spiceMsgMainUUID, testUUID)),
			verdict: Match, done: true, props: allProps},
		{name: "main, init only, name may follow", client: mainClient,
			server:  spiceMainServer(capsMini, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c))),
			verdict: Match, props: withSession},
		{name: "main, client did not ask for name", client: mainClientNoName,
			server:  spiceMainServer(capsMini, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c))),
			verdict: Match, done: true, props: withSession},
		{name: "main, server without a name", client: mainClient,
			server:  spiceMainServer(capsMini, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c)), mini(spiceMsgMainChanls, le32(0))),
			verdict: Match, done: true, props: withSession},
		{name: "main, message not all captured", client: mainClient,
			server:  spiceMainServer(capsMini, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c))[:20]),
			verdict: Match, props: linkProps},
		{name: "main, huge message size", client: mainClient,
			server:  spiceMainServer(capsMini, cat([]byte{103, 0}, le32(0xffffffff), spiceInit(1))),
			verdict: Match, props: linkProps},
		{name: "main, link refused", client: mainClient, server: spiceLinkReply(3, nil, nil),
			verdict: Match, done: true, props: linkProps},
		{name: "main, ticket refused", client: mainClient,
			server:  cat(spiceLinkReply(0, []uint32{capsMini}, nil), le32(5)),
			verdict: Match, done: true, props: linkProps},
		{name: "main, not a SPICE server", client: mainClient, server: []byte("HTTP/1.1 400 Bad Request\r\n\r\n"),
			verdict: Match, done: true, props: linkProps},
		{name: "main, auth selection, mechanism not sent yet", client: mainLink,
			server:  spiceMainServer(capsMini|capsAuthSelSpice, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c))),
			verdict: Match, props: linkProps},
		{name: "main, auth selection, SPICE ticket", client: cat(mainLink, le32(1), make([]byte, spiceTicket)),
			server:  spiceMainServer(capsMini|capsAuthSelSpice, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c)), mini(spiceMsgMainName, spiceNameBody("vm1")), mini(spiceMsgMainUUID, testUUID)),
			verdict: Match, done: true, props: allProps},
		{name: "main, SASL", client: cat(mainLink, le32(spiceAuthSASL)),
			server:  cat(spiceLinkReply(0, []uint32{capsMini | capsAuthSelSpice}, nil), le32(20), []byte("DIGEST-MD5 GSSAPI...")),
			verdict: Match, done: true, props: linkProps},
		{name: "main, hostile name", client: mainClient,
			server: spiceMainServer(capsMini, mini(spiceMsgMainInit, spiceInit(0x0bb5e56c)),
				mini(spiceMsgMainName, cat(le32(1<<30), []byte(badName))), mini(spiceMsgMainUUID, testUUID)),
			verdict: Match, done: true, props: map[string]string{"version": "2.2", "channelType": "main", "channelId": "0",
				"sessionId": "0bb5e56c", "serverUUID": "5a1e0c2d-7b3f-4e8a-9c61-0d2f4b6a8e13",
				"serverName": ("evil?[31m\uFFFD" + strings.Repeat("n", 400))[:MaxValueLen]}},
		{name: "main, no INIT among many messages", client: mainClient,
			server:  spiceMainServer(capsMini, bytes.Repeat(mini(spiceMsgMainChanls-100, nil), spiceMaxMainMessages+1)),
			verdict: Match, done: true, props: linkProps},
	}
}

func TestSPICECases(t *testing.T) { runSniffCases(t, SPICE{}, spiceCases()) }

// A link message whose size is near 4 GiB must not wrap the end offset where int has
// 32 bits (GOARCH=386 go test runs this there): the message is simply never whole.
func TestSpiceHugeLinkSize(t *testing.T) {
	client := cat(spiceLinkMess(0, spiceChannelMain, 0, []uint32{capsMini | capsAuthSelSpice}, []uint32{capsNameUUID}), le32(1))
	binary.LittleEndian.PutUint32(client[12:], 0xFFFFFF00)
	server := spiceMainServer(capsMini|capsAuthSelSpice, spiceMsg(true, spiceMsgMainInit, spiceInit(1)))
	r := SPICE{}.Sniff(client, server)
	if r.Verdict != Match || r.Done || r.Props["sessionId"] != "" {
		t.Fatalf("got %+v, want a Match that waits for the rest of the link message", r)
	}
	if end := spiceEnd(spiceLinkHeaderLen, 0xFFFFFFFF); end < spiceLinkHeaderLen {
		t.Fatalf("spiceEnd wrapped to %d", end)
	}
}
