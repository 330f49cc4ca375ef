package preamble

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
)

// A hello proves the client's secret without sending it: the proof is an HMAC,
// keyed with the secret, over the identity and a value exported from the TLS
// session (RFC 8446 section 7.5) that both endpoints of that one session
// derive and nobody else can. A man in the middle who terminates TLS on each
// side sees two different exporter values, so a proof it relays fails, and
// what it learns does not name the secret or work for any other session.
const (
	// ExporterLabel and ExporterLen are the TLS exporter's inputs.
	ExporterLabel = "EXPORTER-quictun-hello"
	ExporterLen   = 32
	// ProofLen is the size of a proof (HMAC-SHA256).
	ProofLen = sha256.Size

	proofContext = "quictun hello v1\x00"
)

// Exporter is what both ends of a TLS session feed into Proof:
// tls.ConnectionState.ExportKeyingMaterial, taken as a function so this
// package needs no TLS session of its own.
type Exporter func(label string, context []byte, length int) ([]byte, error)

// Proof is the hello's proof that the client of this TLS session holds secret
// for identity.
func Proof(secret []byte, identity string, export Exporter) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errors.New("preamble: a proof needs a secret")
	}
	if len(identity) > MaxIdentityLen {
		return nil, fmt.Errorf("preamble: identity of %d bytes exceeds the limit of %d", len(identity), MaxIdentityLen)
	}
	ekm, err := export(ExporterLabel, nil, ExporterLen)
	if err != nil {
		return nil, fmt.Errorf("preamble: TLS exporter: %w", err)
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(proofContext))
	m.Write([]byte{byte(len(identity))})
	m.Write([]byte(identity))
	m.Write(ekm)
	return m.Sum(nil), nil
}

// VerifyProof says whether proof is the one Proof makes for this session,
// compared in constant time.
func VerifyProof(proof, secret []byte, identity string, export Exporter) bool {
	want, err := Proof(secret, identity, export)
	return err == nil && hmac.Equal(proof, want)
}
