# Shell helpers for the scripts that install what they need and start their
# own PostgreSQL and Redis on loopback (tests, demo, benchmarks).  Source it;
# everything started is recorded so that servers_stop_all (called from an
# EXIT trap) stops it, also on failure.

SERVERS_PG_DIRS=()
SERVERS_REDIS_PIDS=()

# install_packages PKG...: as root, apt-get install those not yet installed,
# without letting redis-server start a system service.  Prints what it does.
install_packages() {
    local missing=() p policy_added=no
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "packages already installed"
        return 0
    fi
    echo "installing: ${missing[*]}"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=yes
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    [ "$policy_added" = yes ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

free_port() {
    perl -MIO::Socket::INET -e \
        'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0)->sockport'
}

# start_pg DATADIR PORT [extra postgresql.conf lines...]; initdb also gets
# the words of $INITDB_ARGS.  The server log is DATADIR/server.log.
start_pg() {
    local dir=$1 port=$2
    shift 2
    # shellcheck disable=SC2086
    initdb -D "$dir" -A trust -U postgres ${INITDB_ARGS:-} >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        for line in "$@"; do echo "$line"; done
    } >> "$dir/postgresql.conf"
    SERVERS_PG_DIRS+=("$dir")
    pg_ctl -D "$dir" -l "$dir/server.log" -w start >/dev/null
}

# start_redis DIR PORT [redis-server options...]: a Redis without
# persistence, stopped by its PID.
start_redis() {
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" "$@" >/dev/null
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    SERVERS_REDIS_PIDS+=("$(cat "$dir/redis.pid")")
}

servers_stop_all() {
    local d p
    for d in "${SERVERS_PG_DIRS[@]}"; do
        pg_ctl -D "$d" -m fast -w stop >/dev/null 2>&1 || true
    done
    for p in "${SERVERS_REDIS_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
}

# Re-run the calling script as postgres when started as root (PostgreSQL
# refuses root), after building and installing the extension.
run_as_postgres_after_install() {
    local script=$1 root=$2
    shift 2
    [ "$(id -u)" -eq 0 ] || return 0
    export PATH="$(pg_config --bindir):$PATH"
    make -C "$root" with_llvm=no >/dev/null
    make -C "$root" with_llvm=no install >/dev/null
    local copy
    copy=$(mktemp -d /tmp/wtcache-run.XXXXXX)
    cp -r "$root/test" "$copy/"
    chmod -R a+rX "$copy"
    local rc=0
    runuser -u postgres -- bash "$copy/test/$(basename "$script")" "$@" || rc=$?
    rm -rf "$copy"
    exit "$rc"
}

# median / min / max of numbers given as arguments
stats() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
        printf "%.0f %.0f %.0f\n", m, a[1], a[NR] }'
}
