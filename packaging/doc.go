// Package packaging holds what turns quictun into release archives and a Debian
// package (systemd units, the sysctl drop-in, maintainer scripts; built by
// .goreleaser.yaml through scripts/release.sh) and the tests of what comes out.
package packaging
