#!/usr/bin/env bash
# wtcache demo: a throwaway PostgreSQL and Redis on loopback, a table of
# 100,000 accounts kept in Redis, and a migration-style batch UPDATE and
# DELETE that Redis follows.
#
#   bash test/demo.sh        (as root on Debian bookworm: installs packages,
#                             builds and installs wtcache, then runs the demo
#                             as the 'postgres' user)
#
# Everything it starts is stopped on exit, also on failure.
set -euo pipefail

ROWS=${DEMO_ROWS:-100000}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")

# ---------------------------------------------------------------- setup --
if [ "${1:-}" != "--run" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        PKGS=(postgresql-15 postgresql-server-dev-15 libhiredis-dev redis-server
              redis-tools make gcc libc6-dev)
        missing=()
        for p in "${PKGS[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
                || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            echo "installing ${missing[*]} ..."
            policy_added=no
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
                chmod 755 /usr/sbin/policy-rc.d
                policy_added=yes
            fi
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q >/dev/null
            apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
            [ "$policy_added" = yes ] && rm -f /usr/sbin/policy-rc.d
        fi
        echo "building and installing wtcache ..."
        export PATH="$(pg_config --bindir):$PATH"
        make -C "$ROOT" with_llvm=no >/dev/null
        make -C "$ROOT" with_llvm=no install >/dev/null
        # The demo itself runs as postgres, from a copy of this script it
        # can read wherever the repository lives.
        copy=$(mktemp /tmp/wtcache-demo.XXXXXX.sh)
        cp "$SELF" "$copy"
        chmod 755 "$copy"
        rc=0
        runuser -u postgres -- bash "$copy" --run || rc=$?
        rm -f "$copy"
        exit $rc
    fi
    exec bash "$SELF" --run
fi

# ----------------------------------------------------------------- demo --
export PATH="$(pg_config --bindir):$PATH"
WORK=$(mktemp -d /tmp/wtcache-demo.XXXXXX)
PGDATA="$WORK/pgdata"
REDIS_PID=""
PG_STARTED=no

cleanup() {
    local rc=$?
    set +e
    if [ "$PG_STARTED" = yes ]; then
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
    fi
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill "$REDIS_PID"
        for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ "$rc" -ne 0 ]; then
        echo
        echo "demo FAILED (exit $rc); last lines of the server logs:"
        tail -n 25 "$WORK/postgresql.log" 2>/dev/null
        tail -n 10 "$WORK/redis.log" 2>/dev/null
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    perl -MIO::Socket::INET -e \
        'my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1",
                                       LocalPort => 0, ReuseAddr => 1) or die $!;
         print $s->sockport, "\n";'
}
now_ms() { date +%s%3N; }

PGPORT=$(free_port)
REDIS_PORT=$(free_port)
while [ "$REDIS_PORT" = "$PGPORT" ]; do REDIS_PORT=$(free_port); done

echo "== starting Redis on 127.0.0.1:$REDIS_PORT and PostgreSQL on 127.0.0.1:$PGPORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no >/dev/null 2>&1 &
REDIS_PID=$!
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 100); do
    [ "$(rcli PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(rcli PING 2>/dev/null)" = PONG ] || { echo "Redis did not start"; exit 1; }

initdb -D "$PGDATA" -A trust -U postgres --encoding=UTF8 --locale=C >/dev/null
cat >> "$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
shared_preload_libraries = 'wtcache'
wtcache.redis_url = 'redis://127.0.0.1:$REDIS_PORT'
EOF
pg_ctl -D "$PGDATA" -l "$WORK/postgresql.log" -w start >/dev/null
PG_STARTED=yes

export PGHOST=127.0.0.1 PGPORT PGUSER=postgres PGDATABASE=postgres
q() { psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }

echo "== CREATE EXTENSION wtcache; table accounts with $ROWS rows"
q "CREATE EXTENSION wtcache"
q "CREATE TABLE accounts (
       id         integer PRIMARY KEY,
       owner      text NOT NULL,
       balance    numeric(12,2) NOT NULL,
       updated_at timestamptz NOT NULL DEFAULT now())"
q "INSERT INTO accounts (id, owner, balance)
   SELECT i, 'owner ' || i, (i % 1000) * 1.5 FROM generate_series(1, $ROWS) i"

count_keys() { rcli --scan --pattern "$PATTERN" | grep -c '}$' || true; }
timed_wait() {
    local t0 t1 ok
    t0=$(now_ms)
    ok=$(q "SELECT wtcache.wait('300s')")
    t1=$(now_ms)
    [ "$ok" = t ] || { echo "wtcache.wait() timed out" >&2; exit 1; }
    echo "$((t1 - t0))"
}
report() {
    local rows keys
    rows=$(q "SELECT count(*) FROM accounts")
    keys=$(count_keys)
    printf '   rows in table: %s   row keys in Redis: %s   queue: %s\n' \
        "$rows" "$keys" "$(q "SELECT count(*) FROM wtcache.queue")"
    [ "$rows" = "$keys" ] || { echo "   MISMATCH between table and Redis"; exit 1; }
}
sample() {
    local v
    v=$(rcli GET "$KEY42")
    echo "   $KEY42 = $v"
    echo "   _v = $(printf '%s' "$v" | sed -n 's/^{"_v":\([0-9]*\),.*/\1/p')"
}

echo "== wtcache.watch('accounts', warm => true)"
t0=$(now_ms)
q "SELECT wtcache.watch('accounts', warm => true)" >/dev/null
# The SCAN pattern of this table's row keys, from wtcache.redis_key().
KEY42=$(q "SELECT wtcache.redis_key('accounts', '42')")
PATTERN="${KEY42%42\}}*}"
ms=$(timed_wait)
echo "   warm-up of $ROWS rows in Redis after $(( $(now_ms) - t0 )) ms (wait() took $ms ms)"
report
sample

echo "== migration: UPDATE accounts SET balance = balance + 1   (all rows, one statement)"
t0=$(now_ms)
psql -X -q -v ON_ERROR_STOP=1 -c "UPDATE accounts SET balance = balance + 1, updated_at = now()"
t1=$(now_ms)
echo "   UPDATE committed in $((t1 - t0)) ms"
echo "   right after commit: $(q "SELECT format('pending %s, oldest pending %s', pending, coalesce(date_trunc('milliseconds', oldest_pending_age)::text, '-')) FROM wtcache.status WHERE table_name = 'accounts'::regclass")"
ms=$(timed_wait)
echo "   wait() returned after $ms ms: Redis caught up"
report
sample

echo "== migration: DELETE FROM accounts WHERE id % 10 = 0"
t0=$(now_ms)
psql -X -q -v ON_ERROR_STOP=1 -c "DELETE FROM accounts WHERE id % 10 = 0"
t1=$(now_ms)
echo "   DELETE committed in $((t1 - t0)) ms"
ms=$(timed_wait)
echo "   wait() returned after $ms ms"
report
echo "   deleted row 40 in Redis: $(rcli EXISTS "$(q "SELECT wtcache.redis_key('accounts', '40')")") key(s)"
sample

echo "== spot check: 1000 random rows, Redis value (without \"_v\") vs row_to_json"
sample_rows=$(psql -X -q -At -F $'\t' -v ON_ERROR_STOP=1 <<'SQL'
SET timezone = 'UTC';
SELECT wtcache.redis_key('accounts', id::text), row_to_json(a)::text
FROM accounts a ORDER BY random() LIMIT 1000;
SQL
)
mapfile -t keys < <(printf '%s\n' "$sample_rows" | cut -f1)
mapfile -t rows < <(printf '%s\n' "$sample_rows" | cut -f2-)
mapfile -t vals < <(rcli MGET "${keys[@]}" | sed 's/^{"_v":[0-9]*,/{/')
bad=0
for i in "${!keys[@]}"; do
    [ "${vals[$i]:-}" = "${rows[$i]:-}" ] || bad=$((bad + 1))
done
echo "   ${#keys[@]} keys read with one MGET: $bad differ"
[ "$bad" -eq 0 ] && [ "${#keys[@]}" -eq 1000 ] || exit 1

echo "== cached reads through SQL"
echo "   wtcache.get('accounts', '42') = $(q "SELECT wtcache.get('accounts', '42')")"
# another session commits a change; the next read, with no wait(), sees it
q "UPDATE accounts SET balance = 1000 WHERE id = 42" >/dev/null
echo "   right after another session's UPDATE (no wait): balance = $(q "SELECT wtcache.get('accounts', '42')->>'balance'")"
echo "   get_many of 5 keys in one round trip: $(q "SELECT string_agg(key[1] || '=' || coalesce(\"row\"->>'balance', 'none'), ' ')
                                                 FROM wtcache.get_many('accounts', ARRAY['41', '42', '43', '50', '99999'])")"

echo "== wtcache.status"
psql -X -P footer=off -c "SELECT table_name, captured, pushed, pending, connected, worker_state,
                                 read_hits, read_bypasses, read_misses FROM wtcache.status"
echo "demo OK"
