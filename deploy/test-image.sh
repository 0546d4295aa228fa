#!/usr/bin/env bash
# Build the container image on a Debian base made here and run it for real.
#
#   bash deploy/test-image.sh          (as root; needs podman, runc and debootstrap)
#
# 1. A Debian base: debootstrap (minbase) into a folder, `podman import` of it. The base is
#    cached in .cache/image/ (git-ignored; delete it for a cold run). It also trusts the
#    CAs this host added in /usr/local/share/ca-certificates, so a TLS-intercepting proxy
#    the host trusts works during the build. No registry is contacted: only a Debian mirror
#    (for debootstrap and apt-get) and PyPI (for pip) during the build.
# 2. The image: `podman build` of the Dockerfile with BASE_IMAGE set to that base.
# 3. A run: one container serves the demo sandboxes (`sync-agent demo --serve`) with no
#    network but loopback; the agent container joins its network namespace and mirrors
#    them, with a read-only root file system and /data mounted from the host. Checked: it
#    runs as uid 10001, `podman healthcheck run` says healthy, the host's unprivileged
#    `nobody` can read every mirrored file, SIGHUP applies an edited configuration (a new
#    source is mirrored), and SIGTERM ends it with status 0 within the stop timeout.
#
# Podman keeps its images and containers in a private folder for this run only (removed at
# the end), with its own containers.conf: runc, cgroupfs, and `default_ulimits = []` (the
# default ulimits cannot be set inside this VM).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${SYNC_AGENT_IMAGE_CACHE:-$PWD/.cache/image}
BASE=localhost/sync-agent-base:$SUITE
IMAGE=localhost/sync-agent:test
STOP_TIMEOUT=30
DOCUMENTS=6
AGENT_UID=10001

started=$(date +%s)
say() { printf '[%4ss] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (podman, debootstrap and the uid checks need it)"
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

work=$(mktemp -d /var/tmp/sync-agent-image.XXXXXX)
chmod 0755 "$work"  # the host's `nobody` must reach the mirror below it
mkdir -p "$work/storage" "$work/run" "$work/data" "$work/config"
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
export CONTAINERS_CONF=$work/containers.conf CONTAINERS_STORAGE_CONF=$work/storage.conf

cleanup() {
  podman rm --all --force --time 0 >/dev/null 2>&1 || true
  podman rmi --all --force >/dev/null 2>&1 || true
  podman system reset --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# ------------------------------------------------------------------ 1. the Debian base

build_base() {
  local rootfs=$work/rootfs
  say "debootstrap $SUITE (minbase) from $DEBIAN_MIRROR"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$DEBIAN_MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >>"$work/debootstrap.log" 2>&1
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$CACHE"
  tar -C "$rootfs" --numeric-owner -cf "$CACHE/debian-$SUITE.tar.partial" .
  mv "$CACHE/debian-$SUITE.tar.partial" "$CACHE/debian-$SUITE.tar"
  rm -rf "$rootfs"
}

[ -f "$CACHE/debian-$SUITE.tar" ] || build_base
podman import --quiet "$CACHE/debian-$SUITE.tar" "$BASE" >/dev/null
say "base image $BASE imported"

# ------------------------------------------------------------------ 2. the image

say "podman build (apt-get and pip inside)"
podman build --quiet --format docker --pull=never --network host \
  --build-arg "BASE_IMAGE=$BASE" --tag "$IMAGE" . >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log" >&2; fail "podman build"; }
say "image $IMAGE built"

# ------------------------------------------------------------------ 3. a real run

# Wait (bounded) until the command succeeds.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  fail "$what: not within ${seconds}s"
}

podman run --detach --name sandbox --network none --read-only --no-healthcheck "$IMAGE" \
  demo --serve /data/mirror --documents "$DOCUMENTS" >/dev/null
wait_for "the sandboxes serving" 60 sh -c "podman logs sandbox 2>/dev/null | grep -q '^# the sandboxes serve'"
podman logs sandbox 2>/dev/null | grep -v '^# the sandboxes serve' >"$work/full.toml"
# First without Huddle: the reload below adds it.
sed '/^name = "huddle"$/,/^enabled = / s/^enabled = true$/enabled = false/' \
  "$work/full.toml" >"$work/config/config.toml"
grep -q '^enabled = false' "$work/config/config.toml" || fail "could not disable huddle"
chmod 0644 "$work/config/config.toml"
chown "$AGENT_UID:$AGENT_UID" "$work/data"
say "sandboxes ready; starting the agent"

# Podman runs HEALTHCHECKs from systemd timers; without systemd it says so on every start
# and stop of the container (and `podman healthcheck run` below runs the check by hand).
quiet_timers() { grep -v 'systemd connection' "$1" >&2 || true; }
podman run --detach --name agent --network container:sandbox --read-only \
  --volume "$work/data:/data" --volume "$work/config:/config:ro" \
  --stop-timeout "$STOP_TIMEOUT" "$IMAGE" >/dev/null 2>"$work/podman.err" ||
  { cat "$work/podman.err" >&2; fail "podman run"; }
quiet_timers "$work/podman.err"

status() {  # the agent's /status, from inside its network namespace
  podman exec agent python -c \
    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8749/status', timeout=4).read().decode())"
}
# Every enabled source has mirrored something, nothing is pending and nothing failed.
settled() {
  status | python3 -c '
import json, sys
wanted = set(sys.argv[1:])
sources = {s["name"]: s for s in json.load(sys.stdin)["sources"]}
ok = wanted <= set(sources) and all(
    sources[n]["mirrored"] > 0 and not sources[n]["pending"] and not sources[n]["failed"]
    for n in wanted)
sys.exit(0 if ok else 1)' "$@"
}

pid=$(podman inspect --format '{{.State.Pid}}' agent)
uid=$(ps -o uid= -p "$pid" | tr -d ' ')
[ "$uid" = "$AGENT_UID" ] || fail "the agent runs as uid $uid, not $AGENT_UID"
say "agent runs as uid $uid (pid $pid on the host)"
[ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' agent)" = true ] ||
  fail "the root file system is writable"
if podman exec agent sh -c 'echo x >/opt/sync-agent/probe' 2>/dev/null; then
  fail "wrote into the image's /opt"
fi
say "root file system is read-only"

wait_for "the first pass (standard-metrics, index-health)" 120 settled standard-metrics index-health
say "first pass mirrored: $(find "$work/data/mirror" -type f -not -path '*/.sync-agent/*' | wc -l) files"

podman healthcheck run agent >"$work/health.txt" 2>&1 || { cat "$work/health.txt" >&2; fail "healthcheck"; }
health=$(podman inspect --format '{{.State.Health.Status}}' agent)
[ "$health" = healthy ] || fail "health is '$health'"
say "healthcheck: $health"

# The agent's own folder (.sync-agent: staging, private) is pruned, not read: nobody may not
# enter it, and a find that meets a folder it cannot enter fails (set -e, pipefail).
files=$(find "$work/data/mirror" -path '*/.sync-agent' -prune -o -type f -print | wc -l)
# (from /: nobody may not enter the folder this script was started in, and find returns there)
readable=$(cd / && runuser -u nobody -- find "$work/data/mirror" -path '*/.sync-agent' -prune \
  -o -type f -readable -print | wc -l) || fail "nobody cannot walk the mirror"
[ "$files" -gt 0 ] && [ "$readable" = "$files" ] || fail "nobody can read $readable of $files files"
(cd / && runuser -u nobody -- sh -c "find '$work/data/mirror' -path '*/.sync-agent' -prune \
  -o -type f -exec cat {} + >/dev/null") || fail "nobody cannot read the mirror"
say "the host's nobody reads all $files mirrored files"

[ ! -e "$work/data/mirror/huddle" ] || fail "huddle was mirrored before it was enabled"
cp "$work/full.toml" "$work/config/config.toml.new"
chmod 0644 "$work/config/config.toml.new"
mv "$work/config/config.toml.new" "$work/config/config.toml"
podman kill --signal HUP agent >/dev/null
wait_for "huddle mirrored after SIGHUP" 120 settled standard-metrics index-health huddle
# The new source's first pass can finish before the reload logs that it is done: wait for both.
wait_for "reload.applied in the log" 30 sh -c "podman logs agent 2>&1 | grep -q '\"reload.applied\"'"
say "SIGHUP: the edited configuration took effect ($(find "$work/data/mirror/huddle" -type f | wc -l) huddle files)"

t0=$(date +%s)
podman stop --time "$STOP_TIMEOUT" agent >/dev/null 2>"$work/podman.err" ||
  { cat "$work/podman.err" >&2; fail "podman stop"; }
quiet_timers "$work/podman.err"
took=$(($(date +%s) - t0))
code=$(podman inspect --format '{{.State.ExitCode}}' agent)
[ "$code" = 0 ] || fail "exit status $code after SIGTERM"
[ "$took" -lt "$STOP_TIMEOUT" ] || fail "stopping took ${took}s (timeout ${STOP_TIMEOUT}s)"
podman logs agent 2>&1 | grep -q '"daemon.stopped"' || fail "no daemon.stopped in the log"
say "SIGTERM: exit status 0 after ${took}s"
podman stop --time 10 sandbox >/dev/null
say "PASS"
