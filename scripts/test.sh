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
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in iproute2 iperf3 kcptun openssh-server openssh-client curl openssl ca-certificates \
         qemu-system-x86 qemu-system-gui virt-viewer xvfb xauth; do
  have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "== not root: not installing ${need[*]}; tests that need them will skip"
  fi
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== windows build"
GOOS=windows GOARCH=amd64 go build ./...

echo "== go test -race"
go test -race -timeout 20m ./...

# A count, not a duration: Go 1.26's fuzz coordinator can fail a target with a bare
# "context deadline exceeded" when a duration runs out while a worker is busy
# (go.dev/issue/75804, fixed in Go 1.27); on this loaded 2-core machine it did,
# with no failing input. 20000 inputs take 0.4-21 s per target here, 53 s in all.
echo "== fuzz (${FUZZTIME:=20000x} each)"
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "-- $pkg $target"
    # quiet when it passes; the whole output (the failing input) when it does not
    if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1); then
      echo "$out"
      exit 1
    fi
  done
done
echo "== all tests passed"
