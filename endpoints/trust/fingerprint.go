// Package trust is how the two endpoints decide to believe each other: the
// server's key pair (given, or generated once and kept so its fingerprint stays
// stable), and the client's ways to verify it (a CA, a pinned fingerprint, or
// trust on first use with a known-hosts file, as SSH does), plus mutual TLS.
package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// fingerprintPrefix names the hash, so that a later change of hash is visible.
const fingerprintPrefix = "sha256:"

// Fingerprint is the SHA-256 of a certificate's DER, as "sha256:<64 hex>".
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// ParseFingerprint accepts "sha256:HEX" or bare HEX, in either case, with or
// without colons between bytes, and returns the canonical form.
func ParseFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, fingerprintPrefix)
	h = strings.ReplaceAll(h, ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q: want sha256: and 64 hex digits", s)
	}
	return fingerprintPrefix + h, nil
}
