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
#                 pipelined SET reaches on one connection.
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
"${PSQL[@]}" <<'SQL'
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
