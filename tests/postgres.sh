# A PostgreSQL server for the test run; sourced by tests/run (or by hand:
# `. tests/postgres.sh; postgres_start`).
#
# `postgres_start` installs Debian's `postgresql` when its server binaries
# are missing, makes a throwaway cluster in a scratch directory (as the
# `postgres` user when run as root: initdb refuses root), with logical
# replication on, and starts it on a free port of 127.0.0.1 (its Unix socket
# in the scratch directory too). It exports `SLUICE_POSTGRES_URL`
# (`postgres://sluice:<password>@127.0.0.1:<port>/sluice`, a superuser the
# tests use to make narrower roles) and `SLUICE_POSTGRES_BIN` (the server's
# binaries, for pg_ctl and psql of the same version). `postgres_stop` stops
# it by its pid and removes the cluster; it never fails.

. "$(dirname "${BASH_SOURCE[0]}")/debian.sh"

postgres_pid=
postgres_scratch=
postgres_bin=

postgres_find_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && { echo "$dir"; return 0; }
    done
    return 1
}

postgres_start() {
    postgres_bin=$(postgres_find_bin || true)
    if [ -z "$postgres_bin" ]; then
        debian_packages postgresql
        postgres_bin=$(postgres_find_bin) || { echo "tests: postgresql installed, but no initdb under /usr/lib/postgresql" >&2; return 1; }
    fi
    # Debian's package starts a cluster of its own on 5432 when it installs: ours is apart from it.
    postgres_scratch=$(mktemp -d /tmp/sluice-postgres.XXXXXX)
    local run=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$postgres_scratch"
        run=(runuser -u postgres --)
    fi
    local password
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$password" > "$postgres_scratch/password"
    chmod 0644 "$postgres_scratch/password"
    "${run[@]}" "$postgres_bin/initdb" -D "$postgres_scratch/data" -U sluice --pwfile="$postgres_scratch/password" \
        -A scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8 >"$postgres_scratch/initdb.log" 2>&1 \
        || { tail -20 "$postgres_scratch/initdb.log" >&2; echo "tests: initdb failed (log above)" >&2; return 1; }
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${run[@]}" "$postgres_bin/postgres" -D "$postgres_scratch/data" -p "$port" -k "$postgres_scratch" \
        -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
        >"$postgres_scratch/postgres.log" 2>&1 &
    postgres_pid=$!
    local i
    for i in $(seq 1 120); do
        if PGPASSWORD=$password "$postgres_bin/psql" -h 127.0.0.1 -p "$port" -U sluice -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
            PGPASSWORD=$password "$postgres_bin/psql" -h 127.0.0.1 -p "$port" -U sluice -d postgres -qc 'create database sluice' >/dev/null
            # runuser may stay as the server's parent: the server's own pid is in its data directory.
            postgres_pid=$(head -1 "$postgres_scratch/data/postmaster.pid")
            export SLUICE_POSTGRES_URL="postgres://sluice:$password@127.0.0.1:$port/sluice"
            export SLUICE_POSTGRES_BIN=$postgres_bin
            echo "tests: started PostgreSQL $("$postgres_bin/postgres" --version | awk '{print $3}') (pid $postgres_pid) on 127.0.0.1:$port"
            return 0
        fi
        kill -0 "$postgres_pid" 2>/dev/null || break
        sleep 0.25
    done
    tail -20 "$postgres_scratch/postgres.log" >&2
    echo "tests: PostgreSQL did not start (log above)" >&2
    postgres_stop
    return 1
}

postgres_stop() {
    if [ -n "$postgres_pid" ]; then
        # SIGINT: the fast shutdown, which ends the sessions still open.
        kill -INT "$postgres_pid" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do
            kill -0 "$postgres_pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$postgres_pid" 2>/dev/null || true
        wait 2>/dev/null "$postgres_pid" || true
        postgres_pid=
    fi
    unset SLUICE_POSTGRES_URL
    if [ -n "$postgres_scratch" ]; then
        rm -rf "$postgres_scratch" 2>/dev/null || echo "tests: could not remove $postgres_scratch" >&2
        postgres_scratch=
    fi
    return 0
}
