#!/usr/bin/env bash
# The main job: a quictun server and client on loopback, and a real SSH login
# through the tunnel, exactly as in the README:
#   quictun-server --listen-on 127.0.0.1:7500
#   quictun-client --listen-on tcp:127.0.0.1:6500 --server-endpoint 127.0.0.1:7500 --token-source tcp:127.0.0.1:2222
#   ssh root@127.0.0.1 -p 6500
# Installs what it needs on a fresh Debian machine (run as root). Everything it
# starts is stopped on exit; nothing outside a temporary directory is changed
# except the packages it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== building"
mkdir -p bin
# -buildvcs=auto: --version names the commit even where GOFLAGS turns stamping off.
go build -buildvcs=auto -o bin/ ./cmd/quictun-server ./cmd/quictun-client

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A private sshd on 127.0.0.1:2222 that lets in one throwaway key.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -p 2222 -o ListenAddress=127.0.0.1 -h "$work/host_key" \
  -o AuthorizedKeysFile="$work/authorized_keys" -o StrictModes=no \
  -o PermitRootLogin=prohibit-password -o PidFile="$work/sshd.pid" 2>"$work/sshd.log" &
pids+=($!)

echo "== starting quictun-server and quictun-client (logs in $work)"
bin/quictun-server --listen-on 127.0.0.1:7500 --state-dir "$work/server" \
  --httpd-listen-on 127.0.0.1:18086 2>"$work/server.log" &
pids+=($!)
bin/quictun-client --listen-on tcp:127.0.0.1:6500 --server-endpoint 127.0.0.1:7500 \
  --token-source tcp:127.0.0.1:2222 --known-hosts "$work/known_hosts" \
  --httpd-listen-on 127.0.0.1:18087 2>"$work/client.log" &
pids+=($!)

for _ in $(seq 50); do
  grep -q "quictun-client listening" "$work/client.log" 2>/dev/null && break
  sleep 0.1
done
grep -h "listening" "$work/server.log" "$work/client.log"

ssh_tunnel=(ssh -p 6500 -i "$work/user_key" -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes root@127.0.0.1)

echo "== ssh root@127.0.0.1 -p 6500 (through the tunnel)"
"${ssh_tunnel[@]}" 'echo "hello from $(hostname), $(whoami) via sshd on port 2222"'

echo "== 64 MiB through the tunnel and back, checksummed"
head -c 64M /dev/urandom >"$work/blob"
want=$(sha256sum <"$work/blob" | cut -d' ' -f1)
got=$("${ssh_tunnel[@]}" 'sha256sum' <"$work/blob" | cut -d' ' -f1)
echo "sent $want"
echo "seen $got"
[ "$want" = "$got" ] || { echo "MISMATCH"; exit 1; }

echo "== the REST API while a session is open: curl http://127.0.0.1:18086/tunnels"
"${ssh_tunnel[@]}" 'sleep 2' &
sleep 1
curl -s http://127.0.0.1:18086/tunnels
wait $!

echo "== the first lines of the server's log"
head -5 "$work/server.log"
echo "== demo passed"
