#!/usr/bin/env bash
# release.sh: what `task release` runs. Builds the release archives, SHA256SUMS and the
# Debian packages into dist/ with goreleaser (.goreleaser.yaml, snapshot mode: nothing
# is published), installing the pinned goreleaser first when it is missing.
# VERSION=1.2.3 names the release; default: the tag vX.Y.Z at HEAD, else 0.0.0-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
goreleaser_version=v2.15.1 # newer ones need a newer Go than this project's
if ! goreleaser --version 2>/dev/null | grep -q "GitVersion:\s*${goreleaser_version}$"; then
  echo "== installing goreleaser $goreleaser_version (go install, a few minutes on a fresh machine)"
  go install "github.com/goreleaser/goreleaser/v2@$goreleaser_version"
fi

tag=$(git tag --points-at HEAD 'v[0-9]*' | head -n1)
export QUICTUN_VERSION="${VERSION:-${tag#v}}"
export QUICTUN_VERSION="${QUICTUN_VERSION:-0.0.0-dev}"
QUICTUN_COMMIT=$(git rev-parse --short=12 HEAD)
git diff --quiet HEAD -- || QUICTUN_COMMIT+="-dirty"
export QUICTUN_COMMIT
# Every time in the outputs is the commit's, so that a rebuild gives the same bytes.
export SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
export QUICTUN_COMMIT_DATE=$(git log -1 --format=%cI)
# One task at a time: goreleaser puts binaries into an archive in the order their builds
# finished, so parallel builds on a busy machine gave the same commit two archives that
# differ in order (the test command's first linux amd64 archive did, once).
goreleaser release --snapshot --clean --skip=publish --parallelism 1 "$@"
