#!/usr/bin/env bash
# The test command: what .ci/run calls and what the README tells you to run.
# Installs what the tests need on a fresh Debian machine (run as root), then:
# gofmt, go vet, a Windows build, every test with the race detector, and a
# short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

# Tools the tests drive for real: iproute2 (namespaces), iperf3 and kcptun (bench
# harness), sshd/ssh, curl and openssl (live sniffer captures), qemu with a SPICE
# display, remote-viewer and Xvfb (real SPICE traffic). Tests that need one skip
# with a message when it is missing, so install them all.
./scripts/need.sh iproute2 iperf3 kcptun openssh-server openssh-client curl openssl ca-certificates \
  qemu-system-x86 qemu-system-gui virt-viewer xvfb xauth

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== windows build"
GOOS=windows GOARCH=amd64 go build ./...

echo "== go test -race"
go test -race -timeout 20m ./...

./scripts/fuzz.sh
echo "== all tests passed"
