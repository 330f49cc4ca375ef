// Package endpoints is quictun's two ends: the client endpoint, which accepts
// application connections (forwards, SOCKS5 and HTTP proxies) and carries each
// over a stream of one warm QUIC session, and the server endpoint, which
// authenticates sessions by their hello (identities, mutual TLS), checks each
// stream's token against its target policy and connects it to the server
// application. Files go by role: client*.go and server*.go, the shared
// lifecycle, link layers and metrics; addresses, tokens, trust, identities,
// policy and the REST API are the subpackages.
package endpoints
