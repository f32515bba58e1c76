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
HERE=$(dirname "$SELF")
. "$HERE/lib/servers.sh"

# ---------------------------------------------------------------- setup --
# As root: packages, build and install, then the demo as 'postgres' (from a
# copy of test/ it can read wherever the repository lives).
if [ "$(id -u)" -eq 0 ]; then
    install_packages postgresql-15 postgresql-server-dev-15 libhiredis-dev libssl-dev \
        redis-server redis-tools make gcc libc6-dev
    echo "building and installing wtcache ..."
    run_as_postgres_after_install "$SELF" "$(dirname "$HERE")" "$@"
fi

# ----------------------------------------------------------------- demo --
export PATH="$(pg_config --bindir):$PATH"
WORK=$(mktemp -d /tmp/wtcache-demo.XXXXXX)

cleanup() {
    local rc=$?
    set +e
    servers_stop_all
    if [ "$rc" -ne 0 ]; then
        echo
        echo "demo FAILED (exit $rc); last lines of the server logs:"
        tail -n 25 "$WORK/pgdata/server.log" 2>/dev/null
        tail -n 10 "$WORK/redis/redis.log" 2>/dev/null
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

PGPORT=$(free_port)
REDIS_PORT=$(free_port)
while [ "$REDIS_PORT" = "$PGPORT" ]; do REDIS_PORT=$(free_port); done

echo "== starting Redis on 127.0.0.1:$REDIS_PORT and PostgreSQL on 127.0.0.1:$PGPORT"
start_redis "$WORK/redis" "$REDIS_PORT"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
[ "$(rcli PING 2>/dev/null)" = PONG ] || { echo "Redis did not start"; exit 1; }
INITDB_ARGS="--encoding=UTF8 --locale=C" start_pg "$WORK/pgdata" "$PGPORT" \
    "shared_preload_libraries = 'wtcache'" \
    "wtcache.redis_url = 'redis://127.0.0.1:$REDIS_PORT'"

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

# migration SQL: one statement from psql, as a migration would run it
migration() {
    local t0 t1
    echo "== migration: $1"
    t0=$(now_ms)
    psql -X -q -v ON_ERROR_STOP=1 -c "$1"
    t1=$(now_ms)
    echo "   ${1%% *} committed in $((t1 - t0)) ms"
}

migration "UPDATE accounts SET balance = balance + 1, updated_at = now()"
echo "   right after commit: $(q "SELECT format('pending %s, oldest pending %s', pending, coalesce(date_trunc('milliseconds', oldest_pending_age)::text, '-')) FROM wtcache.status WHERE table_name = 'accounts'::regclass")"
ms=$(timed_wait)
echo "   wait() returned after $ms ms: Redis caught up"
report
sample

migration "DELETE FROM accounts WHERE id % 10 = 0"
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

echo "== a cached query result, invalidated by a batch UPDATE"
TOTALQ="SELECT count(*) AS n, sum(balance) AS total FROM accounts"
# the call's own time as psql's \timing reports it (no connection set-up)
cached_total() {
    local out v ms
    out=$(psql -X -q -At -v ON_ERROR_STOP=1 -c '\timing on' \
               -c "SELECT q->>'total' FROM wtcache.query('$TOTALQ') q")
    v=$(printf '%s\n' "$out" | grep -v '^Time:' | head -n 1)
    ms=$(printf '%s\n' "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    echo "   $1: total = $v ($ms ms, a new session; queries run so far: $(q "SELECT runs FROM wtcache.query_stats()"))"
}
cached_total "first call (runs the query)"
cached_total "second call (from Redis)"
migration "UPDATE accounts SET balance = balance + 1 WHERE id <= 50000"
cached_total "right after the UPDATE (never the old total)"
timed_wait >/dev/null
cached_total "after wait()"
cached_total "next call (from Redis)"

echo "== wtcache.status"
psql -X -P footer=off -c "SELECT table_name, captured, pushed, pending, connected, worker_state,
                                 read_hits, read_bypasses, read_misses FROM wtcache.status"
echo "demo OK"
