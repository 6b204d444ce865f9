#!/usr/bin/env bash
# Build the callback-sink image from deploy/Dockerfile without pulling anything from a
# container registry, then smoke-test it with deploy/image/smoke.sh.
#
#   deploy/image/build.sh [TAG]          TAG default: localhost/callback-sink:<version>
#
# 1. The base: a Debian bookworm root filesystem with python3 and venv, made by mmdebstrap
#    from Debian's packages and imported into podman as $BASE_IMAGE. It stands in for
#    python:3.11-slim (also Debian bookworm, Python 3.11) and is kept between runs
#    (IMAGE_REBASE=1 makes it again).
# 2. `podman build` of deploy/Dockerfile, unchanged, with PYTHON_IMAGE=$BASE_IMAGE.
# 3. deploy/image/smoke.sh TAG.
#
# Environment (the defaults are what works on this project's machines: see the README,
# "Container image"):
#   PODMAN_STORAGE_DRIVER  vfs    needs nothing from the kernel (overlay was not tried here)
#   PODMAN_RUNTIME         runc   crun refuses the machine's hybrid cgroup v1/v2 layout
#   IMAGE_CA_BUNDLE        /etc/ssl/certs/ca-certificates.crt   mounted read-only over the
#                          build container's bundle during the build only (RUN steps), so
#                          that pip trusts what this host trusts (a TLS-inspecting proxy);
#                          empty: no mount. Nothing of it ends up in the image.
#   DEBIAN_MIRROR          http://deb.debian.org/debian
#   IMAGE_REBASE           1: make the base again
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)
TAG=${1:-localhost/callback-sink:$VERSION}
BASE_IMAGE=${BASE_IMAGE:-localhost/callback-sink-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE_CA_BUNDLE=${IMAGE_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
PODMAN=(podman --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}" --runtime "${PODMAN_RUNTIME:-runc}")
# The sandbox may not raise resource limits (no CAP_SYS_RESOURCE) and podman's defaults
# are above the host's: ask for less.
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

step() { printf '\n== %s\n' "$*" >&2; }

ensure_tools() {
    local missing=()
    command -v mmdebstrap > /dev/null || missing+=(mmdebstrap)
    command -v podman > /dev/null || missing+=(podman)
    command -v runc > /dev/null || missing+=(runc)
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]} (apt-get install -y ${missing[*]} as root)" >&2
        exit 2
    fi
    step "installing ${missing[*]} from Debian's packages"
    apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null
}

make_base() {
    if [ "${IMAGE_REBASE:-0}" != 1 ] && "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
        step "base $BASE_IMAGE: already there"
        return
    fi
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    step "base: mmdebstrap bookworm (python3, venv) -> $BASE_IMAGE"
    # No documentation, manual pages or translations: a third off the base's size.
    mmdebstrap --variant=minbase --quiet \
        --include=python3,python3-venv,python-is-python3,passwd,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        bookworm "$WORK/base.tar" \
        "deb $DEBIAN_MIRROR bookworm main" \
        "deb $DEBIAN_MIRROR bookworm-updates main" \
        "deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main"
    "${PODMAN[@]}" import --change 'CMD ["python3"]' "$WORK/base.tar" "$BASE_IMAGE" > /dev/null
}

build_image() {
    step "podman build deploy/Dockerfile -> $TAG"
    local mounts=()
    if [ -n "$IMAGE_CA_BUNDLE" ] && [ -f "$IMAGE_CA_BUNDLE" ]; then
        mounts=(--volume "$IMAGE_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
    "${PODMAN[@]}" build --network host "${LIMITS[@]}" "${mounts[@]}" \
        --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
        -f "$ROOT/deploy/Dockerfile" -t "$TAG" "$ROOT"
}

ensure_tools
make_base
build_image
step "smoke test"
"$ROOT/deploy/image/smoke.sh" "$TAG"
