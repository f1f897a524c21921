# A Docker engine for the test run; sourced by tests/run.
#
# `docker_engine_start` uses the engine DOCKER_HOST or /var/run/docker.sock
# names when it answers. Otherwise it installs Debian's docker.io if dockerd
# is missing, and starts a private dockerd for this run: its socket and exec
# root in a scratch directory, its data root under target/ (so images built
# by one run are there for the next on the same machine), and no bridge:
# `--bridge=none --iptables=false --ip6tables=false`, so containers get
# `--network host` or `none` only. `docker_engine_stop` stops that dockerd
# by its pid (tests/run calls it on exit, whatever happened, keeping the
# run's exit status).

. "$(dirname "${BASH_SOURCE[0]}")/debian.sh"

docker_engine_pid=
docker_engine_scratch=

docker_engine_start() {
    local engine=
    if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
        engine=$DOCKER_HOST
    elif [ -z "${DOCKER_HOST:-}" ] && [ -S /var/run/docker.sock ] && DOCKER_HOST=unix:///var/run/docker.sock docker version >/dev/null 2>&1; then
        engine=unix:///var/run/docker.sock
    fi
    # task-images/build-images.sh makes its base images with busybox and debootstrap.
    if [ -n "$engine" ]; then
        debian_install busybox=busybox-static debootstrap=debootstrap
        export DOCKER_HOST=$engine
        echo "tests: using the Docker engine at $DOCKER_HOST"
        return 0
    fi
    debian_install busybox=busybox-static debootstrap=debootstrap dockerd=docker.io
    docker_engine_scratch=$(mktemp -d /tmp/sluice-docker.XXXXXX)
    local data="${CARGO_TARGET_DIR:-$PWD/target}/docker-data"
    mkdir -p "$data"
    dockerd --data-root "$data" --exec-root "$docker_engine_scratch/exec" \
        -H "unix://$docker_engine_scratch/docker.sock" --pidfile "$docker_engine_scratch/docker.pid" \
        --bridge=none --iptables=false --ip6tables=false \
        >"$docker_engine_scratch/dockerd.log" 2>&1 &
    docker_engine_pid=$!
    export DOCKER_HOST="unix://$docker_engine_scratch/docker.sock"
    local i
    for i in $(seq 1 60); do
        docker version >/dev/null 2>&1 && { echo "tests: started dockerd (pid $docker_engine_pid) at $DOCKER_HOST"; return 0; }
        kill -0 "$docker_engine_pid" 2>/dev/null || break
        sleep 0.5
    done
    tail -20 "$docker_engine_scratch/dockerd.log" >&2
    echo "tests: dockerd did not start (log above)" >&2
    return 1
}

docker_engine_stop() {
    [ -n "$docker_engine_pid" ] || return 0
    # Containers a failed test left behind go with the engine's own stop.
    kill -TERM "$docker_engine_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do
        kill -0 "$docker_engine_pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$docker_engine_pid" 2>/dev/null || true
    wait "$docker_engine_pid" 2>/dev/null || true
    docker_engine_pid=
    # dockerd leaves its network namespace's bind mount behind in the exec root.
    local mount
    for mount in $(awk -v root="$docker_engine_scratch/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$mount" 2>/dev/null || true
    done
    rm -rf "$docker_engine_scratch" 2>/dev/null || echo "tests: could not remove $docker_engine_scratch" >&2
    return 0
}
