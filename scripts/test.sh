#!/usr/bin/env bash
# The test command: what .ci/run calls and what the README tells you to run.
# Installs what the tests need on a fresh Debian machine (run as root), then:
# gofmt, go vet, a Windows build, every test with the race detector, a short run of
# every fuzz target, and the release: archives and .deb built twice and compared, the
# .deb installed, used and purged. Each step's time and the total are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

# Tools the tests drive for real: iproute2 (namespaces), iperf3 and kcptun (bench
# harness), sshd/ssh, curl and openssl (live sniffer captures), qemu with a SPICE
# display, remote-viewer and Xvfb (real SPICE traffic). Tests that need one skip
# with a message when it is missing, so install them all. systemd and dpkg: the
# package test (systemd-analyze verify). wine and mingw's binutils: the Windows builds
# run under Wine (cmd/internal/wine; about 10 s to install, 20 s to run). chromium: the
# dashboard's test drives it headless (its screenshot lands in test-artifacts/).
# wireguard-go and wireguard-tools: WireGuard between two namespaces over a UDP forward.
step_start=$SECONDS step_name=""
step() {
  [ -n "$step_name" ] && echo "   ($step_name: $((SECONDS - step_start)) s)"
  step_name=$1 step_start=$SECONDS
  [ -n "$1" ] && echo "== $1"
  return 0
}
step "install what the tests need"
./scripts/need.sh iproute2 iperf3 dnsutils dnsmasq-base kcptun openssh-server openssh-client netcat-openbsd chromium curl openssl ca-certificates \
  qemu-system-x86 qemu-system-gui virt-viewer xvfb xauth systemd \
  wine wine64 binutils-mingw-w64-x86-64 chromium wireguard-go wireguard-tools

step gofmt
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "windows build"
GOOS=windows GOARCH=amd64 go build ./...

step "go test -race"
mkdir -p test-artifacts
go test -race -timeout 20m -artifacts -outputdir "$PWD/test-artifacts" ./...

step "memory bound before authentication (without the race detector, which multiplies memory)"
go test -count=1 -run '^TestStrangersStayWithinTheStatedBound$' -v ./endpoints/ | grep -E '^(\s+stranger_test|--- |ok|FAIL)'

step fuzz
./scripts/fuzz.sh

# The release twice: the second build must give the same bytes (packaging/release_test.go
# also rebuilds the linux amd64 server with an empty build cache).
step "release (goreleaser), built twice"
previous=$(mktemp -d)
trap 'rm -rf "$previous"' EXIT
./scripts/release.sh >"$previous/first.log" 2>&1 || { cat "$previous/first.log"; exit 1; }
mv dist "$previous/dist"
./scripts/release.sh >"$previous/second.log" 2>&1 || { cat "$previous/second.log"; exit 1; }
step "release and .deb tests"
if ! QUICTUN_RELEASE_DIST="$PWD/dist" QUICTUN_RELEASE_PREVIOUS="$previous/dist" QUICTUN_DEB_TEST=1 \
  go test -count=1 -v -timeout 15m ./packaging/ >"$previous/packaging.log" 2>&1; then
  cat "$previous/packaging.log"; exit 1
fi
grep -E '^\s*(--- |ok|deb_test|release_test)' "$previous/packaging.log"
step ""
echo "== all tests passed in $SECONDS s"
