#!/usr/bin/env bash
# need.sh PKG...: installs the Debian packages of the list that are not installed yet
# (as root, quietly), so that the test command and the bench run on a fresh machine.
# Not root: names what is missing and goes on; whatever needs it then fails or skips
# with its own message.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "== not root: not installing ${missing[*]} (apt-get install ${missing[*]})"
  exit 0
fi
echo "== installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
