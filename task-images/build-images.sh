#!/usr/bin/env bash
# Builds every task image on the Docker engine that DOCKER_HOST (or the
# default socket) names, from the same Dockerfiles users build, on a
# machine that reaches no container registry:
#   - base images made locally and `docker import`ed, each once per content:
#     busybox from Debian's busybox-static, and a Debian rootfs with Python 3
#     by debootstrap from the mirror apt uses;
#   - our binaries built here by cargo, static (glibc with crt-static when the
#     musl target is not installed), and given to the Dockerfiles as
#     BINARIES=host, so no Rust image is needed;
#   - two Airbyte connectors from PyPI in Airbyte's Python image layout
#     (airbyte-python.Dockerfile): source-faker and source-file.
# Writes the images' names to the env file (one NAME=image per line), which
# the tests and `sluice bench --containers` read.
#
#   task-images/build-images.sh [--env-file FILE] [--profile PROFILE] [--no-airbyte]
#
# PROFILE is the cargo profile of the binaries (default `release`).
set -euo pipefail
cd "$(dirname "$0")/.."

env_file="${CARGO_TARGET_DIR:-target}/images.env" profile=release airbyte=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --env-file) [ $# -ge 2 ] || { echo "build-images: --env-file needs a path" >&2; exit 2; }; env_file="$2"; shift 2 ;;
        --profile) [ $# -ge 2 ] || { echo "build-images: --profile needs a name" >&2; exit 2; }; profile="$2"; shift 2 ;;
        --no-airbyte) airbyte=no; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-images: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

docker version >/dev/null 2>&1 || { echo "build-images: no Docker engine answers at ${DOCKER_HOST:-the default socket}; start one (tests/docker-engine.sh does)" >&2; exit 1; }
# The Dockerfiles need BuildKit: `docker build` has it with the buildx
# plugin; a client older than 23 (Debian's docker.io) has it built in.
build=()
if docker buildx version >/dev/null 2>&1; then
    build=(docker build)
else
    for client in docker /usr/bin/docker; do
        major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || continue
        if [ -n "$major" ] && [ "$major" -lt 23 ]; then build=(env DOCKER_BUILDKIT=1 "$client" build); break; fi
    done
fi
[ ${#build[@]} -gt 0 ] || { echo "build-images: no docker client with BuildKit: install the buildx plugin" >&2; exit 1; }
build+=(--quiet --network host)

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target="${CARGO_TARGET_DIR:-target}"
work="$target/images"
mkdir -p "$work"
has_image() { docker image inspect "$1" >/dev/null 2>&1; }
digest() { sha256sum | cut -c1-12; }

# Busybox: Debian's static binary and its applet links.
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || { echo "build-images: needs Debian's busybox-static (apt-get install busybox-static)" >&2; exit 1; }
busybox_image="sluice-local/busybox:$(digest < "$busybox")"
if ! has_image "$busybox_image"; then
    root="$work/busybox-root"
    rm -rf "$root" && mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/sluice"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$root/etc/passwd"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -c . | docker import --change 'ENV PATH=/bin:/usr/bin:/usr/local/bin' - "$busybox_image" >/dev/null
    rm -rf "$root"
fi

# Debian with Python, by debootstrap from apt's own mirror.
python_image=
if [ "$airbyte" = yes ]; then
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    packages=python3-minimal,python3-venv,python3-pip,ca-certificates
    python_image="sluice-local/debian-python:$(echo "$suite $mirror $packages 1" | digest)"
    if ! has_image "$python_image"; then
        command -v debootstrap >/dev/null || { echo "build-images: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
        root="$work/debian-root"
        rm -rf "$root"
        debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
            || { tail -20 "$work/debootstrap.log" >&2; echo "build-images: debootstrap $suite from $mirror failed (log: $work/debootstrap.log)" >&2; exit 1; }
        ln -sf python3 "$root/usr/bin/python"
        rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
        tar --numeric-owner -C "$root" -c . | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$python_image" >/dev/null
        rm -rf "$root"
    fi
fi

# Our binaries, static, from one cargo run.
arch=$(uname -m)
if rustup target list --installed 2>/dev/null | grep -qx "$arch-unknown-linux-musl"; then
    triple="$arch-unknown-linux-musl"
else
    triple="$arch-unknown-linux-gnu"
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi
connectors=(source-faker destination-jsonl destination-dev-null source-empty destination-postgres source-postgres destination-s3)
packages=(-p sluice-orchestrator -p sluice-bookkeeper)
for c in "${connectors[@]}"; do packages+=(-p "sluice-$c"); done
cargo build --quiet --locked --profile "$profile" --target "$triple" "${packages[@]}"
dir="$target/$triple/$([ "$profile" = dev ] && echo debug || echo "$profile")"
context="$work/context"
rm -rf "$context" && mkdir -p "$context"
for program in orchestrator bookkeeper "${connectors[@]}"; do cp "$dir/$program" "$context/"; done
# The host's CA bundle, for connectors that verify TLS with the system's roots.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$context/"; else : > "$context/ca-certificates.crt"; fi

build_ours() { # name dockerfile [build args...]
    local name="$1" file="$2"; shift 2
    "${build[@]}" -f "task-images/$file" --build-arg BASE="$busybox_image" --build-arg BINARIES=host "$@" -t "$name" "$context" >/dev/null
}
build_ours "sluice/orchestrator:$version" orchestrator.Dockerfile
build_ours "sluice/bookkeeper:$version" bookkeeper.Dockerfile
for c in "${connectors[@]}"; do build_ours "sluice/$c:$version" connector.Dockerfile --build-arg CONNECTOR="$c"; done

# Airbyte's connectors from PyPI, as Airbyte ships them; tagged by content,
# so a run on the same machine builds each once. The host's CA bundle goes
# to pip when pip names one: the index may be reached through a TLS proxy.
bundle=$(python3 -m pip config get global.cert 2>/dev/null || true)
[ -n "$bundle" ] || bundle="${PIP_CERT:-${SSL_CERT_FILE:-}}"
cert=()
[ -n "$bundle" ] && [ -f "$bundle" ] && cert=(--secret "id=pip_cert,src=$bundle")
python_image_of() { # name version package program
    local name
    name="sluice-local/airbyte-$1:$2-$(cat task-images/airbyte-python.Dockerfile task-images/airbyte-main.py <(echo "$python_image") | digest)"
    if ! has_image "$name"; then
        "${build[@]}" -f task-images/airbyte-python.Dockerfile "${cert[@]}" --build-arg BASE="$python_image" \
            --build-arg PACKAGE="$3" --build-arg PROGRAM="$4" -t "$name" task-images >/dev/null
    fi
    echo "$name"
}
airbyte_image() { # connector version: the package airbyte-<connector>, its console script <connector>
    python_image_of "$1" "$2" "airbyte-$1==$2" "$1"
}
faker_image= file_image= runner_image=
if [ "$airbyte" = yes ]; then
    faker_image=$(airbyte_image source-faker 7.2.1)
    file_image=$(airbyte_image source-file 0.5.39)
    # Airbyte's declarative runner, which runs manifest-only connectors
    # (airbyte/source-declarative-manifest is built on the same CDK).
    runner_image=$(python_image_of source-declarative-manifest 7.39.1 "airbyte-cdk==7.39.1" source-declarative-manifest)
fi
{
    echo "SLUICE_BUSYBOX_IMAGE=$busybox_image"
    echo "SLUICE_ORCHESTRATOR_IMAGE=sluice/orchestrator:$version"
    for c in "${connectors[@]}"; do echo "SLUICE_IMAGE_$(echo "$c" | tr 'a-z-' 'A-Z_')=sluice/$c:$version"; done
    if [ "$airbyte" = yes ]; then
        echo "SLUICE_PYTHON_BASE_IMAGE=$python_image"
        echo "SLUICE_AIRBYTE_SOURCE_FAKER_IMAGE=$faker_image"
        echo "SLUICE_AIRBYTE_SOURCE_FILE_IMAGE=$file_image"
        echo "SLUICE_MANIFEST_RUNNER_IMAGE=$runner_image"
    fi
} > "$env_file.tmp"
mv "$env_file.tmp" "$env_file"
cat "$env_file"
