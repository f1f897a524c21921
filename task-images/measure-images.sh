#!/usr/bin/env bash
# Measures what each task image would weigh, without a Docker engine: it
# builds the images' static binaries with plain cargo, lays out each image's
# file system as its Dockerfile does (busybox, then our binaries), and packs
# each layer as a registry stores it (tar, gzip). Prints, per image, the
# compressed size (what ECS pulls) and the unpacked size.
#
#   task-images/measure-images.sh [--no-build] [--busybox PATH]
#
# Stand-ins, both on the heavy side: the Dockerfiles link against musl
# (x86_64-unknown-linux-musl), this links glibc statically (crt-static) when
# the musl target is not installed; the base is Debian's busybox-static
# (glibc, fetched with apt-get download) unless --busybox names another
# static busybox, where the images use busybox:1.37-musl.
set -euo pipefail
cd "$(dirname "$0")/.."

build=yes busybox=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=no; shift ;;
        --busybox) [ $# -ge 2 ] || { echo "measure-images: --busybox needs a path" >&2; exit 2; }; busybox="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "measure-images: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

arch=$(uname -m)
if rustup target list --installed 2>/dev/null | grep -qx "$arch-unknown-linux-musl"; then
    triple="$arch-unknown-linux-musl" linking="musl, static"
else
    triple="$arch-unknown-linux-gnu" linking="glibc, static (crt-static), standing in for musl"
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi
target="${CARGO_TARGET_DIR:-target}"
built="$target/$triple/lambda"
connectors=(source-faker destination-jsonl destination-dev-null source-empty)
if [ "$build" = yes ]; then
    # One cargo run per image, as its Dockerfile builds it: features are not unified across images.
    cargo build --locked --profile lambda --target "$triple" -p sluice-orchestrator -p sluice-bookkeeper
    for c in "${connectors[@]}"; do cargo build --locked --profile lambda --target "$triple" -p "sluice-$c" --bin "$c"; done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$busybox" ]; then
    (cd "$work" && apt-get download busybox-static >/dev/null 2>&1) || { echo "measure-images: cannot fetch Debian's busybox-static; pass --busybox PATH" >&2; exit 1; }
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/deb"
    busybox="$work/deb/bin/busybox"
fi

# A layer as a registry holds it: a tar of the files, gzip-compressed.
layer() { # name dir -> prints "compressed unpacked" in bytes
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$2" -cf "$work/$1.tar" .
    gzip -n -6 -c "$work/$1.tar" > "$work/$1.tar.gz"
    echo "$(stat -c %s "$work/$1.tar.gz") $(du -sb --apparent-size "$2" | cut -f1)"
}
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1000000 }'; }

# The base: busybox with its applet links, as the busybox image has it.
mkdir -p "$work/base/bin" "$work/base/etc"
cp "$busybox" "$work/base/bin/busybox"
for applet in $("$busybox" --list); do [ "$applet" = busybox ] || ln -f "$work/base/bin/busybox" "$work/base/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$work/base/etc/passwd"
sizes=$(layer base "$work/base")
read -r base_gz base_raw <<< "$sizes"

echo "image sizes ($linking; base: $("$busybox" 2>&1 | head -1 | cut -d' ' -f1-2), $(mib "$base_gz") compressed, $(mib "$base_raw") unpacked)"
printf '%-24s %-44s %14s %14s\n' image "our layer" compressed unpacked
report() { # image dir description
    local sizes gz raw
    sizes=$(layer "${1//\//-}" "$2")
    read -r gz raw <<< "$sizes"
    printf '%-24s %-44s %14s %14s\n' "$1" "$3" "$(mib $((gz + base_gz)))" "$(mib $((raw + base_raw)))"
}
mkdir -p "$work/orchestrator/usr/local/bin" "$work/orchestrator/sluice"
cp "$built/orchestrator" "$built/bookkeeper" "$work/orchestrator/usr/local/bin/"
report sluice/orchestrator "$work/orchestrator" "orchestrator $(mib "$(stat -c %s "$built/orchestrator")"), bookkeeper $(mib "$(stat -c %s "$built/bookkeeper")")"
mkdir -p "$work/bookkeeper/usr/local/bin" "$work/bookkeeper/sluice"
cp "$built/bookkeeper" "$work/bookkeeper/usr/local/bin/"
report sluice/bookkeeper "$work/bookkeeper" "bookkeeper $(mib "$(stat -c %s "$built/bookkeeper")")"
for c in "${connectors[@]}"; do
    mkdir -p "$work/$c/sluice"
    cp "$built/$c" "$work/$c/connector"
    report "sluice/$c" "$work/$c" "/connector $(mib "$(stat -c %s "$built/$c")")"
done
