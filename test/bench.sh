#!/usr/bin/env bash
# wtcache benchmark: prints ratios measured in one run on this machine.
#
#   bash test/bench.sh            (root: builds, installs, runs as postgres)
#   BENCH_RUNS=5 BENCH_SCALE=10 bash test/bench.sh
#
# Figures (median of BENCH_RUNS runs, with min and max):
#   capture cost  UPDATE of every pgbench_accounts row (scale 10: 1,000,000
#                 rows) with the wtcache trigger, with a PL/pgSQL outbox
#                 trigger (the hand-written approach), and with neither;
#   drain         changes per second from the commit of that UPDATE to
#                 wtcache.wait() returning, next to what redis-benchmark's
#                 pipelined SET reaches on one connection;
#   cached reads  from one pgbench client (-M prepared, BENCH_READ_SECONDS
#                 seconds a run, default 5), random existing keys, every
#                 row warmed into Redis first: wtcache.get() next to the
#                 primary-key SELECT it replaces; 100 keys through one
#                 wtcache.get_many() call next to 100 wtcache.get() calls;
#                 and, last, get() and the SELECT again with Redis stopped
#                 (reads fall back to the table).
# Starts its own PostgreSQL and Redis on free loopback ports; stops them.
set -euo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
. "$HERE/lib/servers.sh"
if [ "$(id -u)" -eq 0 ]; then
    run_as_postgres_after_install "$SELF" "$(dirname "$HERE")" "$@"
fi

RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_SCALE:-10}
READ_SECONDS=${BENCH_READ_SECONDS:-5}
export PATH="$(pg_config --bindir):$PATH"
WORK=$(mktemp -d /tmp/wtcache-bench.XXXXXX)
trap 'servers_stop_all; rm -rf "$WORK"' EXIT

PGPORT=$(free_port)
REDISPORT=$(free_port)
start_redis "$WORK/redis" "$REDISPORT"
start_pg "$WORK/pg" "$PGPORT" \
    "shared_preload_libraries = 'wtcache'" \
    "wtcache.redis_url = 'redis://127.0.0.1:$REDISPORT'" \
    "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
    "autovacuum = off"
export PGHOST=127.0.0.1 PGPORT PGUSER=postgres PGDATABASE=postgres
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo);" \
     "$(postgres --version | sed 's/ (.*//'); Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
pgbench -i -q -s "$SCALE" >/dev/null 2>&1
ROWS=$("${PSQL[@]}" -Atc "SELECT count(*) FROM pgbench_accounts")
"${PSQL[@]}" >/dev/null <<'SQL'
CREATE EXTENSION wtcache;
SELECT FROM wtcache.watch('pgbench_accounts');
ALTER TABLE pgbench_accounts DISABLE TRIGGER wtcache_capture_upd;
CREATE TABLE outbox (id bigserial PRIMARY KEY, tbl text, pk text, op text, at timestamptz DEFAULT now());
CREATE FUNCTION outbox_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO outbox (tbl, pk, op) VALUES (TG_TABLE_NAME, NEW.aid::text, TG_OP);
  RETURN NULL;
END $$;
CREATE TRIGGER outbox_capture AFTER UPDATE ON pgbench_accounts
  FOR EACH ROW EXECUTE FUNCTION outbox_capture();
ALTER TABLE pgbench_accounts DISABLE TRIGGER outbox_capture;
SQL

# ms of one full-table UPDATE, after a VACUUM and CHECKPOINT so that runs
# start from the same state
timed_update() {
    "${PSQL[@]}" -c "VACUUM pgbench_accounts" -c "TRUNCATE outbox" -c "CHECKPOINT"
    "${PSQL[@]}" -c '\timing on' -c "UPDATE pgbench_accounts SET abalance = abalance + 1" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}

plain=(); watched=(); outbox=(); drain=()
for run in $(seq "$RUNS"); do
    plain+=("$(timed_update)")

    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER wtcache_capture_upd"
    watched+=("$(timed_update)")
    ms=$("${PSQL[@]}" -c '\timing on' -c "SELECT wtcache.wait('600s')" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    drain+=("$(awk -v r="$ROWS" -v ms="$ms" 'BEGIN {printf "%.0f", r / (ms / 1000)}')")
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER wtcache_capture_upd"

    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER outbox_capture"
    outbox+=("$(timed_update)")
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER outbox_capture"
    echo "run $run: plain ${plain[-1]} ms, wtcache ${watched[-1]} ms (drain ${drain[-1]}/s), outbox ${outbox[-1]} ms"
done

redis_set=$(redis-benchmark -p "$REDISPORT" -t set -P 64 -c 1 -n 2000000 -q 2>/dev/null \
            | tr '\r' '\n' | sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)

# Cached reads.  warm() queues every row for the worker; once wait() has
# returned they are all in Redis and no change is pending, so get() hits.
"${PSQL[@]}" -c "SELECT FROM wtcache.warm('pgbench_accounts')" >/dev/null
[ "$("${PSQL[@]}" -Atc "SELECT wtcache.wait('10 min')")" = t ] \
    || { echo "bench: warming pgbench_accounts did not finish" >&2; exit 1; }

printf '\\set aid random(1, %s)\nSELECT * FROM pgbench_accounts WHERE aid = :aid;\n' \
    "$ROWS" > "$WORK/select.sql"
printf '\\set aid random(1, %s)\nSELECT wtcache.get('"'pgbench_accounts'"', :aid::text);\n' \
    "$ROWS" > "$WORK/get.sql"
{
    for i in $(seq 100); do
        printf '\\set aid random(1, %s)\nSELECT wtcache.get('"'pgbench_accounts'"', :aid::text);\n' "$ROWS"
    done
} > "$WORK/get100.sql"
{
    for i in $(seq 100); do printf '\\set k%d random(1, %s)\n' "$i" "$ROWS"; done
    printf "SELECT count(*) FROM wtcache.get_many('pgbench_accounts', ARRAY["
    for i in $(seq 100); do printf '%s:k%d::text' "$([ "$i" -gt 1 ] && echo ', ')" "$i"; done
    printf ']);\n'
} > "$WORK/getmany.sql"

# the rows get() and get_many() return are the table's
check=$("${PSQL[@]}" -Atc "
    SELECT (SELECT count(*) FROM pgbench_accounts a
             WHERE aid <= 100
               AND wtcache.get('pgbench_accounts', aid::text) = to_jsonb(a))
         + (SELECT count(*) FROM wtcache.get_many('pgbench_accounts',
                   ARRAY(SELECT g::text FROM generate_series($ROWS - 99, $ROWS) g)) m
              JOIN pgbench_accounts a ON a.aid = m.key[1]::int AND m."row" = to_jsonb(a))")
[ "$check" = 200 ] \
    || { echo "bench: wtcache.get/get_many returned $check of 200 rows right" >&2; exit 1; }

# transactions per second of one pgbench client running a script
pgbench_tps() {
    local out
    if ! out=$(pgbench -n -M prepared -c 1 -j 1 -T "$READ_SECONDS" -f "$1" 2>&1); then
        echo "$out" >&2
        return 1
    fi
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out"
}
# cached read counters of pgbench_accounts: hits, fallbacks (Redis
# unreachable), and all reads
read_counts() {
    "${PSQL[@]}" -Atc "SELECT hits, fallbacks, hits + misses + fallbacks + bypasses
                         FROM wtcache.read_stats()
                        WHERE table_name = 'pgbench_accounts'::regclass" | tr '|' ' '
}
# percent of the reads since the counts in $1 that were hits ($2 = 1) or
# fallbacks ($2 = 2)
read_share() {
    local b n
    read -r -a b <<<"${1:-0 0 0}"
    read -r -a n <<<"$(read_counts)"
    awk -v c="$((n[$2 - 1] - b[$2 - 1]))" -v t="$((n[2] - b[2]))" \
        'BEGIN {printf "%.0f", t ? 100 * c / t : 0}'
}
tps_times() { awk -v t="$1" -v k="$2" 'BEGIN {printf "%.0f", t * k}'; }

sel=(); get=(); get100=(); getmany=()
for run in $(seq "$RUNS"); do
    sel+=("$(tps_times "$(pgbench_tps "$WORK/select.sql")" 1)")
    before=$(read_counts)
    get+=("$(tps_times "$(pgbench_tps "$WORK/get.sql")" 1)")
    hits=$(read_share "$before" 1)
    get100+=("$(tps_times "$(pgbench_tps "$WORK/get100.sql")" 100)")
    getmany+=("$(tps_times "$(pgbench_tps "$WORK/getmany.sql")" 100)")
    echo "run $run: SELECT ${sel[-1]}/s, get ${get[-1]}/s ($hits% Redis hits)," \
         "100 x get ${get100[-1]} keys/s, get_many ${getmany[-1]} keys/s"
done

# Redis down: stop the Redis started above, measure, start it again on the
# same port.  The reads in one pgbench run share one backend, whose circuit
# breaker tries Redis at most once per wtcache.read_retry_interval.
redis_pid=$(cat "$WORK/redis/redis.pid")
kill "$redis_pid"
for _ in $(seq 200); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.05; done
pids=()
for p in "${SERVERS_REDIS_PIDS[@]}"; do [ "$p" = "$redis_pid" ] || pids+=("$p"); done
SERVERS_REDIS_PIDS=("${pids[@]}")
sel_down=(); get_down=()
for run in $(seq "$RUNS"); do
    sel_down+=("$(tps_times "$(pgbench_tps "$WORK/select.sql")" 1)")
    before=$(read_counts)
    get_down+=("$(tps_times "$(pgbench_tps "$WORK/get.sql")" 1)")
    fallbacks=$(read_share "$before" 2)
    echo "run $run, Redis down: SELECT ${sel_down[-1]}/s, get ${get_down[-1]}/s ($fallbacks% fallbacks to the table)"
done
start_redis "$WORK/redis" "$REDISPORT"

read -r p_med p_min p_max <<<"$(stats "${plain[@]}")"
read -r w_med w_min w_max <<<"$(stats "${watched[@]}")"
read -r o_med o_min o_max <<<"$(stats "${outbox[@]}")"
read -r d_med d_min d_max <<<"$(stats "${drain[@]}")"

echo
printf '%-44s %12s %10s %10s %8s %s\n' "figure ($RUNS runs, $ROWS rows)" median min max ratio goal
printf '%-44s %9s ms %7s ms %7s ms %8s\n' "UPDATE, unwatched" "$p_med" "$p_min" "$p_max" "1.00x"
printf '%-44s %9s ms %7s ms %7s ms %7.2fx %s\n' "UPDATE, watched by wtcache" "$w_med" "$w_min" "$w_max" \
    "$(awk -v a="$w_med" -v b="$p_med" 'BEGIN {print a / b}')" "<= 1.25x"
printf '%-44s %9s ms %7s ms %7s ms %7.2fx %s\n' "UPDATE, PL/pgSQL outbox trigger (peer)" "$o_med" "$o_min" "$o_max" \
    "$(awk -v a="$o_med" -v b="$p_med" 'BEGIN {print a / b}')" "(about 2.4x here)"
printf '%-44s %10s/s %8s/s %8s/s %8s %s\n' "drain into Redis, changes" "$d_med" "$d_min" "$d_max" "" ">= 200000/s"
printf '%-44s %10.0f/s %8s %8s %7.2fx\n' "redis-benchmark SET -P 64, one connection" "${redis_set:-0}" "" "" \
    "$(awk -v a="$d_med" -v b="${redis_set:-1}" 'BEGIN {print a / b}')"

read -r s_med s_min s_max <<<"$(stats "${sel[@]}")"
read -r g_med g_min g_max <<<"$(stats "${get[@]}")"
read -r h_med h_min h_max <<<"$(stats "${get100[@]}")"
read -r m_med m_min m_max <<<"$(stats "${getmany[@]}")"
read -r sd_med sd_min sd_max <<<"$(stats "${sel_down[@]}")"
read -r gd_med gd_min gd_max <<<"$(stats "${get_down[@]}")"
printf '%-44s %10s/s %8s/s %8s/s %8s\n' "SELECT by primary key, queries" "$s_med" "$s_min" "$s_max" "1.00x"
printf '%-44s %10s/s %8s/s %8s/s %7.2fx %s\n' "wtcache.get, one key (Redis hit), calls" \
    "$g_med" "$g_min" "$g_max" "$(awk -v a="$s_med" -v b="$g_med" 'BEGIN {print a / b}')" \
    "<= 2.00x (time per call)"
printf '%-44s %10s/s %8s/s %8s/s %8s\n' "wtcache.get, 100 calls of one key each, keys" "$h_med" "$h_min" "$h_max" "1.00x"
printf '%-44s %10s/s %8s/s %8s/s %7.2fx %s\n' "wtcache.get_many, 100 keys in one call, keys" \
    "$m_med" "$m_min" "$m_max" "$(awk -v a="$m_med" -v b="$h_med" 'BEGIN {print a / b}')" \
    ">= 10x (cheaper per key)"
printf '%-44s %10s/s %8s/s %8s/s %8s %s\n' "SELECT by primary key, Redis down, queries" \
    "$sd_med" "$sd_min" "$sd_max" "1.00x" "(Redis down)"
printf '%-44s %10s/s %8s/s %8s/s %7.2fx %s\n' "wtcache.get, Redis down (table), calls" \
    "$gd_med" "$gd_min" "$gd_max" "$(awk -v a="$sd_med" -v b="$gd_med" 'BEGIN {print a / b}')" \
    "(Redis down; time per call)"
