#!/usr/bin/env bash
# Builds the Docker sandbox image without a registry: debootstrap a minimal
# Debian root filesystem (python3, pytest, git), add the non-root `orch`
# user (uid/gid 10001), and import it as an image. This is what CI runs.
#
# Idempotent: when the image already exists it does nothing (CI reruns stay
# fast), and a finished root filesystem is reused instead of bootstrapped
# again.
#
# Usage: scripts/build-sandbox-image.sh [--orch PATH] [--tag TAG] [--dir DIR]
#                                       [--suite SUITE] [--mirror URL] [--force]
#   --orch PATH   import through `PATH sandbox build --rootfs` (the Engine API)
#                 instead of `docker import`
#   --tag TAG     image tag (default orch-sandbox:latest, or $ORCH_SANDBOX_IMAGE)
#   --dir DIR     where the root filesystem is made (default
#                 /var/cache/orch/sandbox-rootfs-SUITE)
#   --suite S     Debian suite (default: the host's on Debian, else bookworm)
#   --mirror URL  Debian mirror (default: the one apt uses, else deb.debian.org)
#   --force       rebuild even when the image exists
set -euo pipefail

tag="${ORCH_SANDBOX_IMAGE:-orch-sandbox:latest}"
orch="${ORCH_BIN:-}"
dir=""
suite=""
mirror=""
force=0

die() {
    echo "build-sandbox-image: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --orch) orch="${2:?--orch needs a path}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --dir) dir="${2:?--dir needs a path}"; shift 2 ;;
        --suite) suite="${2:?--suite needs a value}"; shift 2 ;;
        --mirror) mirror="${2:?--mirror needs a URL}"; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [ -n "$orch" ] && [ ! -x "$orch" ]; then
    die "--orch '$orch' is not an executable; build it with 'cargo build -p orch-cli' first"
fi

image_exists() {
    if command -v docker >/dev/null 2>&1; then
        docker image inspect "$tag" >/dev/null 2>&1
    elif [ -n "$orch" ]; then
        "$orch" sandbox status --image "$tag" >/dev/null 2>&1
    else
        die "neither the docker CLI nor --orch PATH is available to talk to the engine"
    fi
}

if [ "$force" = 0 ] && image_exists; then
    echo "build-sandbox-image: $tag already exists; nothing to do (--force rebuilds it)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    die "debootstrap needs root: run this script as root (sudo $0 $*)"
fi

# The host's suite and mirror, so debootstrap uses the mirror apt already
# reaches (deb822 .sources first, then the one-line format).
apt_sources() {
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        2>/dev/null || true
}
if [ -z "$suite" ]; then
    # A Debian host's own suite; anything else (Ubuntu, …) gets bookworm.
    # shellcheck disable=SC1091  # the host's own release file
    suite="$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")" || true
    [ -n "$suite" ] || suite=bookworm
fi
if [ -z "$mirror" ]; then
    mirror="$(apt_sources | awk '
        /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }
        /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')"
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
[ -n "$dir" ] || dir="/var/cache/orch/sandbox-rootfs-$suite"
stamp="$dir.complete"

started=$(date +%s)

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build-sandbox-image: installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null
fi

if [ ! -f "$stamp" ]; then
    # A half-made root filesystem (an interrupted run) is not reusable.
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    echo "build-sandbox-image: debootstrap $suite from $mirror into $dir"
    debootstrap --variant=minbase \
        --include=python3,python3-pytest,git,ca-certificates \
        "$suite" "$dir" "$mirror"

    # The non-root user commands run as inside the sandbox.
    if ! chroot "$dir" getent passwd orch >/dev/null; then
        chroot "$dir" groupadd --gid 10001 orch
        chroot "$dir" useradd --uid 10001 --gid 10001 --create-home --shell /bin/sh orch
    fi
    # Mount points the sandbox uses, present even with a read-only root.
    mkdir -p "$dir/workspace" "$dir/env/logs" "$dir/shared/data"
    chown 10001:10001 "$dir/workspace" "$dir/env/logs"
    # Smaller image: package caches are useless in a read-only sandbox.
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
    touch "$stamp"
else
    echo "build-sandbox-image: reusing the root filesystem in $dir"
fi

if [ -n "$orch" ]; then
    "$orch" sandbox build --rootfs "$dir" --tag "$tag"
else
    command -v docker >/dev/null 2>&1 ||
        die "the docker CLI is missing: pass --orch PATH to import through orch instead"
    tar -C "$dir" --numeric-owner -c . | docker import \
        --change 'USER 10001:10001' --change 'WORKDIR /workspace' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'LABEL orch.sandbox=1' \
        --change 'CMD ["sleep", "infinity"]' \
        - "$tag" >/dev/null
fi

echo "build-sandbox-image: built $tag in $(($(date +%s) - started)) s"
