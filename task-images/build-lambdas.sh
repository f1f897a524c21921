#!/usr/bin/env bash
# Builds each Lambda function's deployment package with plain cargo (no
# Docker, no cargo-lambda): target/functions/<function>/bootstrap and
# target/functions/<function>.zip, for the provided.al2023 runtime.
#
#   task-images/build-lambdas.sh [--arch x86_64|arm64] [--profile lambda|dev] [--no-build] [--out DIR] [FUNCTION...]
#
# FUNCTION is config-api, workload-api, scheduler, launcher or monitor (all
# by default). --profile lambda (the default) is the release profile,
# stripped. --no-build packages what cargo already built for the profile:
# the test command packages the binaries `cargo test` built (--profile dev)
# and runs the end-to-end test on those packages. arm64 needs the aarch64-unknown-linux-gnu target and a linker for it
# (rustup target add aarch64-unknown-linux-gnu; apt install gcc-aarch64-linux-gnu).
# `sam build` calls this through the Makefile.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=x86_64 profile=lambda out=target/functions build=yes functions=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --no-build) build=no; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "build-lambdas: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) functions+=("$1"); shift ;;
    esac
done
[ ${#functions[@]} -gt 0 ] || functions=(config-api workload-api scheduler launcher monitor)

case "$arch" in
    x86_64) triple=x86_64-unknown-linux-gnu ;;
    arm64|aarch64)
        triple=aarch64-unknown-linux-gnu
        if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
            echo "build-lambdas: arm64 needs the $triple target: rustup target add $triple (and apt install gcc-aarch64-linux-gnu)" >&2
            exit 2
        fi
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
        ;;
    *) echo "build-lambdas: --arch is x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac

packages=()
for f in "${functions[@]}"; do
    case "$f" in
        config-api|workload-api|scheduler|launcher|monitor) packages+=(-p "sluice-fn-$f") ;;
        *) echo "build-lambdas: no function $f (config-api, workload-api, scheduler, launcher, monitor)" >&2; exit 2 ;;
    esac
done

# config-api serves the web app from its binary: build ui/ first if it was not.
if [ "$build" = yes ] && [[ " ${functions[*]} " == *" config-api "* ]] && [ ! -e ui/dist/index.html ]; then
    if command -v npm >/dev/null 2>&1; then
        (cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
    else
        echo "build-lambdas: no npm, so config-api will serve no web app; install Node.js 20 to build ui/" >&2
    fi
fi

# One cargo invocation for all of them: shared dependencies build once. For
# this machine's own target, no --target, so that the tests' builds are reused.
dir="$profile"; [ "$profile" = dev ] && dir=debug
target="${CARGO_TARGET_DIR:-target}"
if [ "$triple" = "$(rustc -vV | sed -n 's/^host: //p')" ]; then
    [ "$build" = no ] || cargo build --locked --profile "$profile" "${packages[@]}"
    built="$target/$dir"
else
    [ "$build" = no ] || cargo build --locked --profile "$profile" --target "$triple" "${packages[@]}"
    built="$target/$triple/$dir"
fi

# provided.al2023 has glibc 2.34: a binary that needs newer symbols would not start there.
newest_glibc() { objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1; }

mkdir -p "$out"
for f in "${functions[@]}"; do
    binary="$built/$f"
    [ -x "$binary" ] || { echo "build-lambdas: $binary is missing (built without --no-build?)" >&2; exit 1; }
    mkdir -p "$out/$f"
    cp "$binary" "$out/$f/bootstrap"
    needs=$(newest_glibc "$out/$f/bootstrap" || true)
    if [ -n "$needs" ] && [ "$(printf '%s\n' "$needs" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ]; then
        echo "build-lambdas: $f needs $needs, newer than provided.al2023's glibc 2.34; build on an older system" >&2
        exit 1
    fi
    rm -f "$out/$f.zip"
    (cd "$out/$f" && zip -q -9 "../$f.zip" bootstrap)
    printf '%-13s bootstrap %6s KiB  zip %6s KiB  (%s)\n' "$f" "$(( $(stat -c %s "$out/$f/bootstrap") / 1024 ))" "$(( $(stat -c %s "$out/$f.zip") / 1024 ))" "${needs:-static}"
done
