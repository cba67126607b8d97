#!/usr/bin/env bash
# Build the agent base image from Debian packages, with no container registry involved.
#
#   scripts/build-agent-base-image.sh [--force] [IMAGE]   (default: waooaw/agentd-base:bookworm)
#
# agentd needs Python >= 3.11 and the redis client library. The image is Debian bookworm
# (python3 3.11) built by mmdebstrap (variant "apt": the essential packages, apt, and what
# --include names) and turned into an image by `docker import`.
#
# redis-py comes from trixie (python3-redis 6.1, pure Python, installable on bookworm through
# python3-async-timeout): bookworm's own python3-redis is 4.3.4, whose Redis.from_url() does not
# accept the single_connection_client argument agentd passes (agents/agentd/worker.py). Once
# agentd works with redis-py 4.3, AGENT_BASE_REDIS_SUITE=bookworm builds a pure bookworm image.
#
# Run as root, with a Docker engine answering at DOCKER_HOST and a Debian mirror reachable
# (DEBIAN_MIRROR, default deb.debian.org). Idempotent: an image that already exists is left
# alone; --force rebuilds it.
set -euo pipefail

force=false
if [[ "${1:-}" == "--force" ]]; then
    force=true
    shift
fi
image="${1:-waooaw/agentd-base:bookworm}"
suite=bookworm
redis_suite="${AGENT_BASE_REDIS_SUITE:-trixie}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if ! $force && docker image inspect "$image" >/dev/null 2>&1; then
    echo "agent base image $image exists; nothing to do"
    exit 0
fi

for tool in mmdebstrap docker; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is not installed (apt-get install mmdebstrap docker.io)" >&2
        exit 1
    fi
done

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

sources=("deb $mirror $suite main" "deb $security_mirror $suite-security main")
redis_package=python3-redis
if [[ "$redis_suite" != "$suite" ]]; then
    sources+=("deb $mirror $redis_suite main")
    redis_package="python3-redis/$redis_suite"
fi

echo "building $image from Debian $suite packages (python3, $redis_package)"
# Everything comes from $suite except what names another suite explicitly. The merged-usr
# hook makes /bin, /lib and /sbin symlinks into /usr as debootstrap does, instead of installing
# usrmerge, which would pull in the whole of perl (a third of the image). The image stays
# small because on the vfs storage driver every container copies it in full.
# ca-certificates: agents may talk TLS (rediss://) to a managed Redis.
mmdebstrap --quiet --variant=apt \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt="APT::Default-Release \"$suite\"" \
    --include="python3,$redis_package,ca-certificates" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --format=tar "$suite" "$workdir/base.tar" "${sources[@]}"

docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "agentd base: Debian $suite, python3, $redis_package (mmdebstrap)" \
    "$workdir/base.tar" "$image" >/dev/null
docker run --rm --network none "$image" python3 -c \
    'import sys, redis; print("python", sys.version.split()[0], "redis", redis.__version__)'
echo "built $image"
