#!/usr/bin/env bash
# Smoke-test a built callback-sink image with podman: its configuration, `--version`, an
# ingress that answers /healthz and /readyz and accepts the specification's examples
# (spooled: it is given no broker), a worker whose probe server answers, and a clean exit
# on SIGTERM. Touches no broker and no Redis: the URLs point at a closed port.
#
#   deploy/image/smoke.sh [TAG]        TAG default: localhost/callback-sink:<version>
#
# Same PODMAN_STORAGE_DRIVER / PODMAN_RUNTIME as build.sh. Exit 0: every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)
TAG=${1:-localhost/callback-sink:$VERSION}
PODMAN=(podman --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}" --runtime "${PODMAN_RUNTIME:-runc}")
RUN=(--network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
NAME=callback-sink-smoke-$$
SECRET=smoke-$$-secret
# Nothing listens on port 1: the ingress spools, the worker waits for its broker.
NOWHERE=amqp://guest:guest@127.0.0.1:1/

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*" >&2; }
cleanup() { "${PODMAN[@]}" rm -f "$NAME-ingress" "$NAME-worker" > /dev/null 2>&1 || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# GET URL: prints "STATUS BODY"; status 000 when nothing answers.
get() {
    python3 - "$1" << 'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError:
    print("000")
EOF
}

# Wait up to 90 s (a vfs container copies its whole root file system first) for URL.
wait_for() {
    local url=$1 deadline=$((SECONDS + 90)) answer
    while [ $SECONDS -lt $deadline ]; do
        answer=$(get "$url")
        [ "${answer%% *}" != 000 ] && { echo "$answer"; return 0; }
        sleep 1
    done
    return 1
}

# NAME EXPECTED...: SIGTERM; it must be gone within 30 s (not SIGKILLed at podman's
# time-out, 137) with one of the EXPECTED exit statuses.
stop_cleanly() {
    local name=$1 start=$SECONDS code
    shift
    "${PODMAN[@]}" stop -t 60 "$name" > /dev/null
    code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$name")
    if [[ " $* " != *" $code "* ]] || [ $((SECONDS - start)) -gt 30 ]; then
        "${PODMAN[@]}" logs "$name" 2>&1 | tail -20 >&2
        fail "$name exited $code $((SECONDS - start)) s after SIGTERM (expected $*)"
    fi
    ok "$name stopped $((SECONDS - start)) s after SIGTERM, exit status $code"
}

# -- the image's configuration ---------------------------------------------------------------
config=$("${PODMAN[@]}" image inspect --format \
    '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.ExposedPorts}}' "$TAG")
case $config in
    '10001:10001|["callback-sink"]|'*8080/tcp*8081/tcp*) ok "user, entrypoint, ports: $config" ;;
    *) fail "unexpected image config: $config" ;;
esac

# -- --version -------------------------------------------------------------------------------
version=$("${PODMAN[@]}" run --rm "${RUN[@]}" "$TAG" --version)
[ "$version" = "callback-sink $VERSION" ] || fail "--version printed '$version'"
ok "--version: $version"

# -- the ingress -----------------------------------------------------------------------------
port=$(free_port)
"${PODMAN[@]}" run -d --name "$NAME-ingress" "${RUN[@]}" \
    -e SINK_PORT="$port" -e SINK_SECRETS="$SECRET" -e SINK_INGRESS_PROCESSES=1 \
    -e SINK_AMQP_URL="$NOWHERE" -e SINK_PUBLISH_TIMEOUT=1 -e SINK_DRAIN_DELAY=1 \
    "$TAG" ingress > /dev/null
base=http://127.0.0.1:$port
answer=$(wait_for "$base/healthz") || { "${PODMAN[@]}" logs "$NAME-ingress" >&2; fail "ingress /healthz never answered"; }
[ "${answer%% *}" = 200 ] || fail "ingress /healthz: $answer"
ok "ingress /healthz: $answer"
uid=$("${PODMAN[@]}" exec "$NAME-ingress" id -u)
[ "$uid" = 10001 ] || fail "ingress runs as uid $uid"
ok "ingress runs as uid $uid"
# Ready without a broker: the spool (in the image, owned by uid 10001) has room.
answer=$(get "$base/readyz")
[ "${answer%% *}" = 200 ] || fail "ingress /readyz: $answer"
ok "ingress /readyz: $answer"
# Every example of the specification, signed, posted from inside the container: each must
# be answered 200 (made durable in the spool).
"${PODMAN[@]}" exec "$NAME-ingress" callback-sink send --secret "$SECRET" "$base/callbacks" \
    > /dev/null || fail "callback-sink send: not every callback was accepted"
answer=$(get "$base/readyz")
case $answer in
    *'"spool_records": 0'*) fail "nothing spooled: $answer" ;;
    *'"spool_records"'*) ok "callbacks accepted and spooled: $answer" ;;
    *) fail "ingress /readyz after send: $answer" ;;
esac
# Stopped with those callbacks still spooled (no broker): a spool.stranded error line and
# exit status 3, never a silent 0 (the next ingress on the same spool would drain them).
stop_cleanly "$NAME-ingress" 3
"${PODMAN[@]}" logs "$NAME-ingress" 2>&1 | grep -q '"spool.stranded"' \
    || fail "no spool.stranded line from an ingress stopped with a spool"
ok "ingress stopped with a spool: spool.stranded, exit status 3"

# -- a worker --------------------------------------------------------------------------------
wport=$(free_port)
"${PODMAN[@]}" run -d --name "$NAME-worker" "${RUN[@]}" \
    -e SINK_WORKER_PORT="$wport" -e SINK_AMQP_URL="$NOWHERE" -e SINK_STARTUP_TIMEOUT_S=20 \
    "$TAG" worker > /dev/null
answer=$(wait_for "http://127.0.0.1:$wport/healthz") || { "${PODMAN[@]}" logs "$NAME-worker" >&2; fail "worker /healthz never answered"; }
[ "${answer%% *}" = 200 ] || fail "worker /healthz: $answer"
ok "worker /healthz: $answer"
answer=$(get "http://127.0.0.1:$wport/readyz")
[ "${answer%% *}" = 503 ] || fail "worker /readyz without a broker: $answer"
ok "worker /readyz without a broker: $answer"
# A worker still waiting for its broker does not act on SIGTERM before its start-up wait
# (SINK_STARTUP_TIMEOUT_S, 20 s here) ends; then it stops with status 1 (start-up failed).
# It must not need podman's SIGKILL (137). A worker that handled SIGTERM at once would
# exit 0.
stop_cleanly "$NAME-worker" 0 1

echo "smoke test passed: $TAG" >&2
