#!/usr/bin/env bash
# A master and a replica of one volume on this machine, and a change
# propagating from one to the other. Run as root (FUSE mounts, owners).
#
#   scripts/demo.sh            build, run the demo, clean up
#   scripts/demo.sh --keep     leave both running; the script prints how to stop them
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = "--keep" ] && keep=true

if [ "$(id -u)" -ne 0 ] || [ ! -c /dev/fuse ]; then
  echo "demo: run as root on a machine with /dev/fuse" >&2
  exit 1
fi

cargo build --release --quiet --workspace --bins
J=$PWD/target/release
D=$(mktemp -d /tmp/jfs-demo.XXXXXX)
mkdir -p "$D/site" "$D/mirror"
master_pid= replica_pid=

cleanup() {
  [ -n "$replica_pid" ] && kill "$replica_pid" 2>/dev/null && wait "$replica_pid" 2>/dev/null || true
  [ -n "$master_pid" ] && { umount "$D/site" 2>/dev/null || true; wait "$master_pid" 2>/dev/null || true; }
  umount "$D/mirror" 2>/dev/null || true
  rm -rf "$D"
}
$keep || trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() { # wait_for FILE PATTERN: until FILE shows PATTERN (10 s at most)
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

step "master: a volume, mounted at $D/site, serving replicas on loopback"
"$J/jfs-master" init "$D/master.jfs"
"$J/jfs-master" mount "$D/master.jfs" "$D/site" --listen 127.0.0.1:0 --sync interval:5 \
  2>"$D/master.log" &
master_pid=$!
wait_for "$D/master.log" "serving replicas on"
addr=$(sed -n 's/.*serving replicas on //p' "$D/master.log")
echo "listening on $addr"

step "replica: joins with the volume's key, follows, serves a read-only mount at $D/mirror"
"$J/jfs-replica" init "$D/replica.jfs" --master "$addr" --secret-file "$D/master.jfs/secret"
"$J/jfs-replica" follow "$D/replica.jfs" --mount "$D/mirror" 2>"$D/replica.log" &
replica_pid=$!
wait_for "$D/replica.log" "following"

step "a change on the master..."
echo "hello from the master, $(date -u +%T.%N)" > "$D/site/hello.txt"
mkdir "$D/site/etc" && cp -a /etc/hostname /etc/os-release "$D/site/etc/"
sleep 0.2
step "...is on the replica"
ls -l "$D/mirror" "$D/mirror/etc"
cat "$D/mirror/hello.txt"

step "the replica is read-only"
echo "edit" > "$D/mirror/hello.txt" || true

step "status"
"$J/jfs-master" status "$D/master.jfs"
echo
"$J/jfs-replica" status "$D/replica.jfs"

if $keep; then
  step "left running"
  echo "master: $D/site (pid $master_pid)   replica: $D/mirror (pid $replica_pid)"
  echo "stop:   kill $replica_pid; umount $D/site"
fi
