# LocalStack for the test run, on the host without Docker; sourced by
# tests/run (or by hand: `. tests/localstack.sh; localstack_start`).
#
# `localstack_start` installs LocalStack's community runtime (PyPI
# `localstack-core[runtime]`, which needs Python 3.13) into
# `$SLUICE_CACHE_DIR/venvs/localstack-core-<version>` once, marked
# `.sluice-installed` as tests/run's `install_venv` does; starts it on a free
# port of 127.0.0.1 with its filesystem root and log in a scratch directory;
# waits until it says "Ready." and answers /_localstack/health; and exports
# `SLUICE_LOCALSTACK_URL=http://127.0.0.1:<port>`. `localstack_stop` kills it
# (and any process it started) by pid with SIGKILL, as it ignores SIGTERM,
# removes the scratch directory and never fails.
#
# Only SQS, Secrets Manager, EventBridge, EventBridge Scheduler, CloudWatch
# Logs, S3, STS and IAM: those work offline. DynamoDB (it downloads Java and
# DynamoDB Local at first use), Lambda and ECS do not; point those at moto
# with the SDKs' per-service endpoints (`AWS_ENDPOINT_URL_DYNAMODB` ...).
# LocalStack accepts any credentials; its account is 000000000000, or the
# access key id itself when that is 12 digits (123456789012 matches moto's).

localstack_pid=
localstack_scratch=

# What the venv holds: LocalStack and the versions of its dependencies it was
# checked with. LocalStack's own pins need cbor2<6, pyOpenSSL 24.3,
# cryptography<45 and service_identity beside them to start; moto-ext is the
# emulation of most of these services, so it is pinned too.
LOCALSTACK_VERSION=2026.3.0
LOCALSTACK_REQUIREMENTS=(
    "localstack-core[runtime]==$LOCALSTACK_VERSION"
    moto-ext==5.1.54
    cbor2==5.9.0
    pyopenssl==24.3.0
    cryptography==44.0.3
    service-identity==24.2.0
    hypercorn==0.18.0
    rolo==0.8.9
)
LOCALSTACK_SERVICES=sqs,secretsmanager,events,scheduler,logs,s3,sts,iam

# A Python 3.13: $SLUICE_LOCALSTACK_PYTHON, python3.13 on PATH, pyenv's
# newest 3.13, then uv's (found, or installed where that can be fetched).
localstack_python() {
    local candidate
    for candidate in ${SLUICE_LOCALSTACK_PYTHON:-} python3.13 \
        $(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V -r); do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    "${localstack_uv[@]}" python find 3.13 2>/dev/null && return 0
    echo "tests: no Python 3.13 found; asking uv for one" >&2
    "${localstack_uv[@]}" python install --quiet 3.13 >&2 && "${localstack_uv[@]}" python find 3.13 2>/dev/null
}

localstack_install() { # venv
    local venv="$1"
    [ -e "$venv/.sluice-installed" ] && return 0
    local python
    python=$(localstack_python) || { echo "tests: LocalStack needs Python 3.13, and none was found" >&2; return 1; }
    echo "tests: installing LocalStack $LOCALSTACK_VERSION with $python"
    # Each step checked: `set -e` does not hold in a function called with `||`.
    rm -rf "$venv" && mkdir -p "$(dirname "$venv")" \
        && "${localstack_uv[@]}" venv --quiet --python "$python" "$venv" \
        && "${localstack_uv[@]}" pip install --quiet --python "$venv/bin/python" "${LOCALSTACK_REQUIREMENTS[@]}" \
        && touch "$venv/.sluice-installed"
}

localstack_start() {
    if command -v uv >/dev/null 2>&1; then
        localstack_uv=(uv)
    else
        python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
        localstack_uv=(python3 -m uv)
    fi
    local cache="${SLUICE_CACHE_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/sluice-cache}"
    local venv="$cache/venvs/localstack-core-$LOCALSTACK_VERSION"
    localstack_install "$venv" || return 1
    localstack_scratch=$(mktemp -d /tmp/sluice-localstack.XXXXXX)
    mkdir -p "$localstack_scratch/tmp"
    local port
    port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # A clean environment (no AWS_*, DEBUG, PERSISTENCE ... of the caller), and:
    # hypercorn, which binds the address it is given (twisted, the default,
    # listens on 0.0.0.0 whatever GATEWAY_LISTEN says); no DNS server (it
    # would take 0.0.0.0:53 and look up localstack.cloud); no analytics, no
    # certificate download (a self-signed one instead); queue URLs on the
    # host and port asked (http://127.0.0.1:<port>/000000000000/<name>, as
    # AWS's path); every service loaded before "Ready." (about 4 s more
    # there, instead of about 5 s on the first request). Secrets Manager
    # loads Lambda, which looks for Docker: it finds none (no `docker ps`, no
    # engine at DOCKER_HOST), so no engine of the run's is touched. Its own
    # AWS clients get credentials and no instance metadata service (else
    # botocore asks 169.254.169.254 for some requests).
    env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 TMPDIR="$localstack_scratch/tmp" \
        OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$localstack_scratch/fs" \
        GATEWAY_LISTEN="127.0.0.1:$port" GATEWAY_SERVER=hypercorn LOCALSTACK_HOST="127.0.0.1:$port" \
        SERVICES="$LOCALSTACK_SERVICES" SQS_ENDPOINT_STRATEGY=off \
        EAGER_SERVICE_LOADING=1 DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
        DOCKER_CMD=false DOCKER_HOST="unix://$localstack_scratch/no-docker.sock" \
        AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
        "$venv/bin/python" -m localstack.runtime.main >"$localstack_scratch/localstack.log" 2>&1 </dev/null &
    localstack_pid=$!
    local url="http://127.0.0.1:$port" i
    for i in $(seq 1 "$((${SLUICE_LOCALSTACK_TIMEOUT:-120} * 4))"); do
        if grep -q '^Ready\.' "$localstack_scratch/localstack.log" 2>/dev/null \
            && "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()' "$url/_localstack/health" >/dev/null 2>&1; then
            export SLUICE_LOCALSTACK_URL=$url
            echo "tests: started LocalStack $LOCALSTACK_VERSION (pid $localstack_pid) at $SLUICE_LOCALSTACK_URL"
            return 0
        fi
        kill -0 "$localstack_pid" 2>/dev/null || break
        sleep 0.25
    done
    tail -30 "$localstack_scratch/localstack.log" >&2
    echo "tests: LocalStack did not start (log above)" >&2
    localstack_stop
    return 1
}

# The pids of the processes under $1, deepest first.
localstack_descendants() { # pid
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        localstack_descendants "$child"
        echo "$child"
    done
}

localstack_stop() {
    if [ -n "$localstack_pid" ]; then
        # It starts no process of its own for these services; any it did start goes too.
        local pid
        kill -STOP "$localstack_pid" 2>/dev/null || true
        for pid in $(localstack_descendants "$localstack_pid"); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        kill -KILL "$localstack_pid" 2>/dev/null || true
        wait "$localstack_pid" 2>/dev/null || true
        localstack_pid=
    fi
    unset SLUICE_LOCALSTACK_URL
    if [ -n "$localstack_scratch" ]; then
        rm -rf "$localstack_scratch" 2>/dev/null || echo "tests: could not remove $localstack_scratch" >&2
        localstack_scratch=
    fi
    return 0
}
