#!/usr/bin/env bash
# wtcache benchmark: prints ratios measured in one run on this machine.
#
#   bash test/bench.sh            (root: builds, installs, runs as postgres)
#   BENCH_RUNS=5 BENCH_SCALE=10 bash test/bench.sh
#   BENCH_NO_INSTALL=1 bash test/bench.sh   (root: the extension as installed)
#   BENCH_ONLY=capture bash test/bench.sh   (the capture cost alone, with the
#                 partitioned table's: its lines and goal, a few minutes)
#   BENCH_ONLY=narrow bash test/bench.sh    (the narrowed cached query's hit
#                 ratio alone, a minute or two)
#   BENCH_ONLY=wait bash test/bench.sh      (replica acknowledgements alone:
#                 drain and lag with and without WAIT, a few minutes)
#   BENCH_ONLY=audit bash test/bench.sh     (the live audit's cost to the
#                 writers and the drain alone, a few minutes)
#   BENCH_ONLY=warm bash test/bench.sh      (live changes' lag during a warm
#                 alone; BENCH_WARM_ROWS rows, default 2,000,000: minutes)
#
# Figures (median of BENCH_RUNS runs, with min and max):
#   capture cost  UPDATE of every pgbench_accounts row (scale 10: 1,000,000
#                 rows) with the wtcache trigger, with a PL/pgSQL outbox
#                 trigger (the hand-written approach), and with neither;
#   partitioned   the same UPDATE of the same rows split over
#                 BENCH_PARTITIONS hash partitions on aid (default 10),
#                 watched (watch() of the parent) and not, next to the
#                 ratio above (test/lib/bench_partition.sh);
#   drain         changes per second from the commit of that UPDATE to
#                 wtcache.wait() returning, next to what redis-benchmark's
#                 pipelined SET reaches on one connection;
#   cluster drain the same UPDATE and wait() by a PostgreSQL of its own
#                 whose wtcache writes to a 3-master Redis Cluster on
#                 loopback (test/lib/bench_cluster.sh), next to one Redis;
#   write load    TPS of pgbench -N (single-row UPDATE of pgbench_accounts,
#                 SELECT, INSERT into history; 2 clients, BENCH_WRITE_SECONDS
#                 a run, default 15) on the table unwatched, watched, and
#                 with the outbox trigger, with synchronous_commit on and off;
#   write latency p50 of one client's UPDATE + commit of a random row
#                 (BENCH_WRITE_COUNT writes, default 3,000), unwatched
#                 and watched, next to the application write-through peer:
#                 UPDATE ... RETURNING + commit, then SET of the row (two
#                 round trips); then the keys each leaves stale after a
#                 batch UPDATE of BENCH_STALE_ROWS rows (default 100,000)
#                 from psql, which bypasses the application (wtcache's
#                 counted once wtcache.wait() has returned);
#   cached reads  from one pgbench client (-M prepared, BENCH_READ_SECONDS
#                 seconds a run, default 5), random existing keys, every
#                 row warmed into Redis first: wtcache.get() next to the
#                 primary-key SELECT it replaces; 100 keys through one
#                 wtcache.get_many() call next to 100 wtcache.get() calls;
#                 and, last, get() and the SELECT again with Redis stopped
#                 (reads fall back to the table);
#   TLS           (BENCH_TLS=0 skips it) the drain of that UPDATE and
#                 wtcache.get() of one key over TLS (rediss://, the same
#                 Redis given a TLS port) next to plain TCP, alternated
#                 (test/lib/bench_tls.sh);
#   cached query  a GROUP BY over bench_events (BENCH_EVENT_ROWS rows,
#                 default 11,000,000: about 1 s here) run directly, next to
#                 SELECT * FROM wtcache.query() of the same text once its
#                 result is in Redis, from one pgbench client (-M prepared;
#                 a few transactions of the direct query, BENCH_READ_SECONDS
#                 of the cached one); query_stats() shows they were all hits;
#   long work     the commit-to-Redis lag of live changes (the lag probe,
#                 100 a second) while wtcache.warm() of BENCH_WARM_ROWS
#                 rows is delivered, next to the same probe with no long
#                 work, and the warm's rows a second (test/lib/bench_warm.sh);
#   narrowed      the hit ratio of a per-org wtcache.query() while other
#   queries       sessions update rows of other orgs at a steady 150 writes
#                 a second (test/lib/bench_narrow.sh), next to the same
#                 query kept on the table tag, with the stale results
#                 counted in the same run;
#   replica       the drain and the lag above with wtcache.redis_wait_replicas
#   acks          = 1 (a replica of the bench's Redis on loopback) next to 0,
#                 alternated, and the worker's time in WAIT per round
#                 (test/lib/bench_wait.sh);
#   live audit    pgbench -N TPS and the drain of an UPDATE with
#                 wtcache.audit_rate = BENCH_AUDIT_RATE (1,000 keys a
#                 second) next to the audit off, alternated
#                 (test/lib/bench_audit.sh);
#   invalidation  wtcache.invalidate() of a tag, committed, plus the
#                 wtcache.wait() until it is in Redis, for a tag that 10
#                 cached query results depend on and one that 100,000 do,
#                 all of them refilled before every run; a result of the
#                 second tag is a hit before and a miss after;
#   lag           commit-to-Redis lag under a steady BENCH_LAG_RATE changes
#                 per second (default 5,000: pgbench -R, BENCH_LAG_TXN_ROWS
#                 rows a transaction, default 5, synchronous_commit on),
#                 BENCH_LAG_SECONDS a run (default 15): a probe commits a
#                 change 100 times a second and polls Redis until the key
#                 holds it; p50 and p99;
#   logical       the logical decoding peer (wal_level = logical from here
#   decoding      on, after a restart): pg_recvlogical with test_decoding
#                 feeding test/bench_decode.py, which pipelines SET/DEL to
#                 Redis on one connection: its lag as above, and its drain
#                 of the UPDATE of every row (commit to a change committed
#                 after it being in Redis), next to pg_recvlogical alone
#                 writing a file (what any consumer could reach);
#   beside the    (wal_level = logical still, test/lib/bench_load.sh) the
#   peer          write load's TPS unwatched, watched and with the logical
#                 decoding peer running, sync commit on and off;
#   clients       the write load's TPS unwatched and watched, and the lag
#                 probe beside the watched runs, at 1, 2, 4 and 8 clients
#                 (BENCH_SCALE_SECONDS a run, default 10);
#   databases     10 databases with pgbench tables (scale 1) watched, one
#                 pgbench -N client each at once: total TPS unwatched and
#                 watched, the workers' CPU per change and private memory.
# The drains also print Redis's CPU per row (INFO cpu, all masters).
# Ends with the goals met and missed.  Helpers: test/bench_client.py (the
# timed clients), test/bench_decode.py (the peer's consumer); both run with
# /usr/bin/python3 and Debian's python3-psycopg2 and python3-redis.
# Starts its own PostgreSQL and Redis on free loopback ports; stops them.
set -euo pipefail
case "${BENCH_ONLY:-}" in
    ''|capture|narrow|wait|audit|warm) ;;
    *) echo "bench: BENCH_ONLY is capture, narrow, wait, audit, warm or unset, not '$BENCH_ONLY'" >&2; exit 2 ;;
esac
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
. "$HERE/lib/servers.sh"
if [ "$(id -u)" -eq 0 ]; then
    install_packages postgresql-15 redis-server redis-tools openssl python3-psycopg2 python3-redis
    if [ "${BENCH_NO_INSTALL:-0}" = 1 ]; then
        # measure the extension as installed (another checkout or another
        # person builds it): the re-run as postgres of
        # run_as_postgres_after_install, without its make and make install
        copy=$(mktemp -d /tmp/wtcache-run.XXXXXX)
        cp -r "$HERE" "$copy/"
        chmod -R a+rX "$copy"
        rc=0
        runuser -u postgres -- bash "$copy/$(basename "$HERE")/$(basename "$SELF")" "$@" || rc=$?
        rm -rf "$copy"
        exit "$rc"
    fi
    install_packages postgresql-server-dev-15 libhiredis-dev libssl-dev make gcc libc6-dev
    run_as_postgres_after_install "$SELF" "$(dirname "$HERE")" "$@"
fi

RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_SCALE:-10}
READ_SECONDS=${BENCH_READ_SECONDS:-5}
EVENT_ROWS=${BENCH_EVENT_ROWS:-11000000}
WRITE_SECONDS=${BENCH_WRITE_SECONDS:-15}
WRITE_COUNT=${BENCH_WRITE_COUNT:-3000}
STALE_ROWS=${BENCH_STALE_ROWS:-100000}
LAG_RATE=${BENCH_LAG_RATE:-5000}
LAG_TXN_ROWS=${BENCH_LAG_TXN_ROWS:-5}
LAG_SECONDS=${BENCH_LAG_SECONDS:-15}
PY=/usr/bin/python3
export PATH="$(pg_config --bindir):$PATH"
WORK=$(mktemp -d /tmp/wtcache-bench.XXXXXX)
# processes started in the background, stopped by their PID at exit
BG_PIDS=()
stop_background() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap 'stop_background; servers_stop_all; rm -rf "$WORK"' EXIT

PGPORT=$(free_port)
REDISPORT=$(free_port)
start_redis "$WORK/redis" "$REDISPORT"
start_pg "$WORK/pg" "$PGPORT" \
    "shared_preload_libraries = 'wtcache'" \
    "wtcache.redis_url = 'redis://127.0.0.1:$REDISPORT'" \
    "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
    "autovacuum = off" "max_worker_processes = 32"
export PGHOST=127.0.0.1 PGPORT PGUSER=postgres PGDATABASE=postgres
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

MACHINE="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo);\
 PostgreSQL $(postgres --version | sed 's/^[^)]*) \([^ ]*\).*/\1/'); Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)
echo "machine: $MACHINE; load average before: $LOAD_BEFORE"
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

# The worker idle.  While wtcache's trigger is disabled (the unwatched and
# outbox runs) the table is held: wait() says false at once (src/README.md, DDL),
# and what must be gone is every other queued change.
delivered() {
    local deadline=$((SECONDS + 600))
    while :; do
        [ "$("${PSQL[@]}" -Atc "SET client_min_messages = error; SELECT wtcache.wait('10 min')")" = t ] && return 0
        [ "$("${PSQL[@]}" -Atc "SELECT count(*) FROM wtcache.queue WHERE set_aside IS NULL OR discard")" = 0 ] && return 0
        [ "$SECONDS" -lt "$deadline" ] \
            || { echo "bench: the worker did not deliver its backlog in 10 minutes" >&2; exit 1; }
        sleep 0.2
    done
}
# ms of one full-table UPDATE of table $1, after a VACUUM and CHECKPOINT so
# that runs start from the same state
timed_update() {
    local t=$1
    "${PSQL[@]}" -c "VACUUM $t" -c "TRUNCATE outbox" -c "CHECKPOINT"
    "${PSQL[@]}" -c '\timing on' -c "UPDATE $t SET abalance = abalance + 1" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}

# The table.  A line: label, unit (" ms", " us", "/s" or ""), the runs'
# values (as "v1 v2 ...": median, min and max are printed), ratio, goal.
line() {
    local med mn mx
    # shellcheck disable=SC2086  # $3 is the list of values, one word each
    read -r med mn mx <<<"$(stats $3)"
    printf '%-52s %12s %12s %12s %8s%s\n' "$1" "$med$2" "$mn$2" "$mx$2" "$4" "${5:+ $5}"
}
median() { stats "$@" | cut -d' ' -f1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
# goal TEXT EXPR: EXPR an awk condition on the figures, true when met
GOALS=()
goal() {
    if awk "BEGIN {exit !($2)}"; then
        GOALS+=("met     $1")
    else
        GOALS+=("MISSED  $1")
    fi
}

# CPU time (user + system) in µs that the Redis servers on the ports given
# have used, all together
redis_cpu_us() {
    local p
    for p in "$@"; do redis-cli -p "$p" info cpu; done \
        | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {t += $2} END {printf "%.0f", t * 1000000}'
}
# ns a row from CPU µs $1 and $2 (before and after)
per_row() { awk -v a="$1" -v b="$2" -v r="$ROWS" 'BEGIN {printf "%.0f", (b - a) * 1000 / r}'; }

. "$HERE/lib/bench_narrow.sh"
# BENCH_ONLY=narrow: the narrowed cached query's figures alone
if [ "${BENCH_ONLY:-}" = narrow ]; then
    narrow_runs
    echo
    echo "machine: $MACHINE"
    echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg);" \
         "$((($(date +%s) - STARTED + 30) / 60)) min"
    printf '%-52s %12s %12s %12s %8s %s\n' "figure ($RUNS runs)" median min max ratio goal
    narrow_lines
    narrow_goal
    echo
    echo "goals:"
    printf '  %s\n' "${GOALS[@]}"
    exit 0
fi
. "$HERE/lib/bench_wait.sh"
# BENCH_ONLY=wait: replica acknowledgements alone (ratios, no goal)
if [ "${BENCH_ONLY:-}" = wait ]; then
    wait_runs
    echo
    echo "machine: $MACHINE"
    echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg);" \
         "$((($(date +%s) - STARTED + 30) / 60)) min"
    printf '%-52s %12s %12s %12s %8s %s\n' "figure ($RUNS runs, $ROWS rows)" median min max ratio goal
    wait_lines
    exit 0
fi

. "$HERE/lib/bench_audit.sh"
# BENCH_ONLY=audit: the live audit's cost alone
if [ "${BENCH_ONLY:-}" = audit ]; then
    audit_runs
    echo
    echo "machine: $MACHINE"
    echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg);" \
         "$((($(date +%s) - STARTED + 30) / 60)) min"
    printf '%-52s %12s %12s %12s %8s %s\n' "figure ($RUNS runs)" median min max ratio goal
    audit_lines
    audit_goal
    echo
    echo "goals:"
    printf '  %s\n' "${GOALS[@]}"
    exit 0
fi

. "$HERE/lib/bench_warm.sh"
# BENCH_ONLY=warm: live changes' lag during a warm, alone
if [ "${BENCH_ONLY:-}" = warm ]; then
    warm_runs
    echo
    echo "machine: $MACHINE"
    echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg);" \
         "$((($(date +%s) - STARTED + 30) / 60)) min"
    printf '%-52s %12s %12s %12s %8s %s\n' "figure ($RUNS runs)" median min max ratio goal
    warm_lines
    warm_goal
    echo
    echo "goals:"
    printf '  %s\n' "${GOALS[@]}"
    exit 0
fi

plain=(); watched=(); outbox=(); drain=(); redis_row_ns=()
for run in $(seq "$RUNS"); do
    plain+=("$(timed_update pgbench_accounts)")

    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER wtcache_capture_upd"
    # enabling the trigger requeues the table (its changes meanwhile were
    # not captured): delivered first, so that neither figure counts it
    delivered
    rc0=$(redis_cpu_us "$REDISPORT")
    watched+=("$(timed_update pgbench_accounts)")
    ms=$("${PSQL[@]}" -c '\timing on' -c "SELECT wtcache.wait('600s')" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    drain+=("$(awk -v r="$ROWS" -v ms="$ms" 'BEGIN {printf "%.0f", r / (ms / 1000)}')")
    redis_row_ns+=("$(per_row "$rc0" "$(redis_cpu_us "$REDISPORT")")")
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER wtcache_capture_upd"

    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER outbox_capture"
    outbox+=("$(timed_update pgbench_accounts)")
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER outbox_capture"
    echo "run $run: plain ${plain[-1]} ms, wtcache ${watched[-1]} ms (drain ${drain[-1]}/s," \
         "Redis CPU ${redis_row_ns[-1]} ns a row), outbox ${outbox[-1]} ms"
done

# the same UPDATE on a partitioned copy of the table
. "$HERE/lib/bench_partition.sh"
partitioned_capture_runs

table_header() {
    printf '%-52s %12s %12s %12s %8s %s\n' "figure ($RUNS runs, $ROWS rows)" median min max ratio goal
}
capture_lines() {
    local p_med w_med o_med
    p_med=$(median "${plain[@]}"); w_med=$(median "${watched[@]}"); o_med=$(median "${outbox[@]}")
    line "UPDATE of every row, unwatched" " ms" "${plain[*]}" "1.00x"
    line "UPDATE of every row, watched by wtcache" " ms" "${watched[*]}" "$(ratio "$w_med" "$p_med")" "<= 1.15x"
    line "UPDATE of every row, PL/pgSQL outbox (peer)" " ms" "${outbox[*]}" "$(ratio "$o_med" "$p_med")" "(about 2.4x here)"
    partitioned_capture_lines
}
capture_goal() {
    local p_med w_med
    p_med=$(median "${plain[@]}"); w_med=$(median "${watched[@]}")
    goal "capture: watched UPDATE $(ratio "$w_med" "$p_med") of unwatched, goal <= 1.15x" "$w_med / $p_med <= 1.15"
}
# BENCH_ONLY=capture: the figures so far, and no more
if [ "${BENCH_ONLY:-}" = capture ]; then
    echo
    echo "machine: $MACHINE"
    echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg);" \
         "$((($(date +%s) - STARTED + 30) / 60)) min"
    table_header
    capture_lines
    line "drain of the UPDATE into Redis, wtcache" "/s" "${drain[*]}" "1.00x"
    partitioned_drain_line
    capture_goal
    echo
    echo "goals:"
    printf '  %s\n' "${GOALS[@]}"
    exit 0
fi
partitioned_drop

redis_set=$(redis-benchmark -p "$REDISPORT" -t set -P 64 -c 1 -n 2000000 -q 2>/dev/null \
            | tr '\r' '\n' | sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)

# the same drain into a 3-master Redis Cluster, by a PostgreSQL of its own
. "$HERE/lib/bench_cluster.sh"
cluster_drain_runs

# Write load.  Only the trigger named is enabled: none (unwatched), wtcache
# or the outbox.  Every measurement starts from the same state: the worker
# idle, the table and the queue vacuumed (autovacuum is off), the outbox
# emptied.
capture_with() {
    local t
    for t in wtcache_capture_upd outbox_capture; do
        if [ "$t" = "$1" ]; then
            "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER $t"
        else
            "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER $t"
        fi
    done
}
quiesce() {
    delivered
    "${PSQL[@]}" -c "VACUUM pgbench_accounts" -c "VACUUM wtcache.queue" -c "TRUNCATE outbox"
}
settle() {
    quiesce
    "${PSQL[@]}" -c "CHECKPOINT"
}
# The first change to a page after a checkpoint writes the whole page to
# WAL: right after a CHECKPOINT, most single-row updates of this table
# would, and the commits measured would be mostly page images.  So the runs
# of the write figures start with a CHECKPOINT and an UPDATE of every row,
# and measure the steady state between checkpoints.
touch_every_page() {
    capture_with none
    delivered
    "${PSQL[@]}" -c "CHECKPOINT" -c "UPDATE pgbench_accounts SET abalance = abalance"
}
# The delivery worker's pid, and its CPU time in clock ticks from /proc.
worker_pid() {
    "${PSQL[@]}" -Atc "SELECT pid FROM wtcache.worker_status() WHERE pid IS NOT NULL
                        AND database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())"
}
worker_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
worker_pushed() {
    "${PSQL[@]}" -Atc "SELECT pushed FROM wtcache.worker_status() WHERE pid = $1"
}
# TPS of pgbench -N: synchronous_commit $1, $2 clients, $3 seconds
pgbench_write_tps() {
    local out
    if ! out=$(PGOPTIONS="-c synchronous_commit=$1" pgbench -n -N -c "$2" -j "$2" -T "$3" 2>&1); then
        echo "$out" >&2
        return 1
    fi
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | awk '{printf "%.0f", $1}'
}
# TPS of pgbench -N, 2 clients, synchronous_commit $1, with capture $2 (a
# trigger, none, or ld: none, the logical decoding peer running, which
# needs wal_level = logical).  With wtcache, the worker's CPU per
# delivered change over the run and its drain is appended to
# $WORK/worker_us$WORKER_US_TAG.$1 (this runs in a subshell).
write_tps() {
    local tps pid t0 p0
    capture_with "$([ "$2" = ld ] && echo none || echo "$2")"
    quiesce
    if [ "$2" = wtcache_capture_upd ]; then
        pid=$(worker_pid); t0=$(worker_ticks "$pid"); p0=$(worker_pushed "$pid")
    fi
    [ "$2" = ld ] && start_decoder
    if ! tps=$(pgbench_write_tps "$1" 2 "$WRITE_SECONDS"); then
        [ "$2" = ld ] && stop_decoder
        return 1
    fi
    [ "$2" = ld ] && stop_decoder
    if [ "$2" = wtcache_capture_upd ]; then
        delivered
        awk -v t="$(( $(worker_ticks "$pid") - t0 ))" -v n="$(( $(worker_pushed "$pid") - p0 ))" \
            -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f\n", (n > 0 ? t * 1000000 / hz / n : 0)}' \
            >>"$WORK/worker_us${WORKER_US_TAG:-}.$1"
    fi
    echo "$tps"
}

tps_on_plain=(); tps_on_wtc=(); tps_on_outbox=(); tps_off_plain=(); tps_off_wtc=(); tps_off_outbox=()
for run in $(seq "$RUNS"); do
    touch_every_page
    tps_on_plain+=("$(write_tps on none)")
    tps_on_wtc+=("$(write_tps on wtcache_capture_upd)")
    tps_on_outbox+=("$(write_tps on outbox_capture)")
    tps_off_plain+=("$(write_tps off none)")
    tps_off_wtc+=("$(write_tps off wtcache_capture_upd)")
    tps_off_outbox+=("$(write_tps off outbox_capture)")
    echo "run $run: pgbench -N TPS, synchronous_commit on: unwatched ${tps_on_plain[-1]}," \
         "wtcache ${tps_on_wtc[-1]}, outbox ${tps_on_outbox[-1]}; off: unwatched ${tps_off_plain[-1]}," \
         "wtcache ${tps_off_wtc[-1]}, outbox ${tps_off_outbox[-1]}"
done

# Write latency and stale keys, next to the application write-through peer.
# The peer's keys live in Redis database 2, so they never meet wtcache's.
client() { "$PY" "$HERE/bench_client.py" --redis-port "$REDISPORT" "$@"; }
# p50 µs of one client's writes; $1: the client's target, $2: capture
write_latency() {
    local out
    capture_with "$2"
    quiesce
    out=$(client writes --target "$1" --count "$WRITE_COUNT" --rows "$ROWS" --seed "$run")
    echo "${out%% *}"
}
lat_plain=(); lat_wtc=(); lat_app=(); stale_app=(); stale_wtc=()
for run in $(seq "$RUNS"); do
    touch_every_page
    lat_plain+=("$(write_latency plain none)")
    lat_wtc+=("$(write_latency wtcache wtcache_capture_upd)")
    lat_app+=("$(write_latency app none)")

    # the application has rows 1..STALE_ROWS cached, as after writing or
    # reading them; a batch UPDATE from psql goes around it
    capture_with none
    client fill --target app --upto "$STALE_ROWS" >/dev/null
    "${PSQL[@]}" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $STALE_ROWS"
    stale_app+=("$(client stale --target app --upto "$STALE_ROWS")")

    # wtcache: every row current in Redis first (the table changed while
    # unwatched above), then the same batch UPDATE
    capture_with wtcache_capture_upd
    "${PSQL[@]}" -c "SET client_min_messages = warning" -c "SELECT FROM wtcache.warm('pgbench_accounts')" >/dev/null
    delivered
    "${PSQL[@]}" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $STALE_ROWS"
    delivered
    stale_wtc+=("$(client stale --target wtcache --upto "$STALE_ROWS")")
    echo "run $run: write p50, unwatched ${lat_plain[-1]} us, wtcache ${lat_wtc[-1]} us," \
         "application write-through ${lat_app[-1]} us; keys stale after a batch UPDATE of" \
         "$STALE_ROWS rows from psql: application ${stale_app[-1]}, wtcache ${stale_wtc[-1]}"
done
# reads of a table whose capture trigger is disabled go to the table
capture_with wtcache_capture_upd
delivered

# Cached reads.  warm() queues every row for the worker; once wait() has
# returned they are all in Redis and no change is pending, so get() hits.
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "SELECT FROM wtcache.warm('pgbench_accounts')" >/dev/null
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

# TLS: the drain and get() over TLS next to plain TCP, to the same Redis
drain_tcp=(); drain_tls=(); get_tcp=(); get_tls=()
if [ "${BENCH_TLS:-1}" = 1 ]; then
    . "$HERE/lib/bench_tls.sh"
    tls_runs
fi

# Cached query.  The rows are loaded before watch(), so that capturing them
# neither slows the load nor leaves changes to deliver (query() runs, and
# does not cache, a query over a table with changes on their way); watch()
# without warm queues no row.  The primary key comes after the load (one
# index build), and VACUUM sets the hint bits and the visibility map that
# the first measured scans would otherwise set.
"${PSQL[@]}" >/dev/null <<SQL
CREATE TABLE bench_events (id bigint NOT NULL, org_id int NOT NULL, amount int NOT NULL);
INSERT INTO bench_events SELECT g, g % 1000, g % 997 FROM generate_series(1, $EVENT_ROWS) g;
ALTER TABLE bench_events ADD PRIMARY KEY (id);
VACUUM ANALYZE bench_events;
SELECT FROM wtcache.watch('bench_events');
SQL
[ "$("${PSQL[@]}" -Atc "SELECT wtcache.wait('60s')")" = t ] \
    || { echo "bench: watching bench_events left changes undelivered" >&2; exit 1; }

EVENTS_SQL='SELECT org_id, count(*) AS n, sum(amount) AS total FROM bench_events GROUP BY org_id ORDER BY org_id'
printf '%s;\n' "$EVENTS_SQL" > "$WORK/query_direct.sql"
printf "SELECT * FROM wtcache.query('%s');\n" "$EVENTS_SQL" > "$WORK/query_cached.sql"
# transactions of the direct query a run: about 1 s each
DIRECT_TXNS=3

# What looked wrong in the extension's behaviour while measuring: printed
# when seen and again under the table, since a figure measured on misses is
# not the figure its line names.  Call at the top level, not in $(...).
WARNINGS=()
warn() {
    echo "bench: WARNING: $*" >&2
    WARNINGS+=("$*")
}
# cached query counters of this database
query_counts() {
    "${PSQL[@]}" -Atc "SELECT hits, misses, fallbacks, bypasses, fills, fills_rejected, runs
                         FROM wtcache.query_stats()" | tr '|' ' '
}
# the counters that grew since the counts in $1, as "hits +5, runs +1", or
# "none"
query_delta() {
    local b n i s names=(hits misses fallbacks bypasses fills fills_rejected runs) grew=()
    read -r -a b <<<"$1"
    read -r -a n <<<"$(query_counts)"
    for i in "${!names[@]}"; do
        [ "${n[i]}" = "${b[i]}" ] || grew+=("${names[i]} +$((n[i] - b[i]))")
    done
    s=$(printf '%s, ' "${grew[@]}")
    s=${s%, }
    echo "${s:-none}"
}
# mean latency in µs of one pgbench client running script $1, with the
# pgbench options that follow (-t or -T)
pgbench_latency_us() {
    local script=$1 out
    shift
    if ! out=$(pgbench -n -M prepared -c 1 -j 1 "$@" -f "$script" 2>&1); then
        echo "$out" >&2
        return 1
    fi
    sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' <<<"$out" | awk '{printf "%.0f", $1 * 1000}'
}

# The first call misses, runs the query and stores its result; the second,
# which must be a hit, must return the rows the query returns.  Both also
# bring bench_events into the page cache before the measured runs.
before=$(query_counts)
out=$("${PSQL[@]}" -At -c '\timing on' -c "SELECT count(*) FROM wtcache.query('$EVENTS_SQL')")
fill_ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out")
fill=$(query_delta "$before")
[ "$fill" = "misses +1, fills +1, runs +1" ] \
    || warn "the first wtcache.query() of the GROUP BY did not run and store it; query_stats: $fill"
before=$(query_counts)
same=$("${PSQL[@]}" -Atc "
    SELECT (SELECT jsonb_agg(q ORDER BY (q->>'org_id')::int) FROM wtcache.query('$EVENTS_SQL') q)
         = (SELECT jsonb_agg(to_jsonb(e) ORDER BY e.org_id) FROM ($EVENTS_SQL) e)")
hit=$(query_delta "$before")
[ "$same" = t ] \
    || { echo "bench: wtcache.query() of the GROUP BY returned other rows than the query" >&2; exit 1; }
[ "$hit" = "hits +1" ] \
    || warn "the second wtcache.query() of the GROUP BY was not a hit; query_stats: $hit"
echo "bench_events: $EVENT_ROWS rows; wtcache.query() of the GROUP BY: first call $fill_ms ms" \
     "($fill), second call ($hit) returns the query's rows"

qdirect=(); qcached=()
for run in $(seq "$RUNS"); do
    qdirect+=("$(pgbench_latency_us "$WORK/query_direct.sql" -t "$DIRECT_TXNS")")
    before=$(query_counts)
    qcached+=("$(pgbench_latency_us "$WORK/query_cached.sql" -T "$READ_SECONDS")")
    counted=$(query_delta "$before")
    # only hits: no query ran, none missed, bypassed or fell back
    [[ $counted =~ ^hits\ \+[0-9]+$ ]] \
        || warn "run $run: the wtcache.query() calls measured were not all hits; query_stats: $counted"
    echo "run $run: GROUP BY ${qdirect[-1]} us, wtcache.query() of it ${qcached[-1]} us ($counted)"
done

# Tag invalidation.  TAG_SQL reads no table, so its results depend only on
# the tags they are cached with.  Invalidating a tag is one write to its
# stamp, which entries are checked against when read, so the time should
# not depend on how many entries depend on it; the entries are refilled
# before every run anyway (about 10 s for 100,000 here), so that every
# measured invalidation has that many valid dependents.
# shellcheck disable=SC2016  # $1 is the query's parameter, not the shell's
TAG_SQL='SELECT $1::int AS i'
# seconds to cache TAG_SQL's results for 1..$2 depending on tag $1, in one
# statement
fill_tag() {
    local out
    out=$("${PSQL[@]}" -At -c '\timing on' -c "
        SELECT count(*) FROM generate_series(1, $2) i,
               LATERAL wtcache.query('$TAG_SQL', ARRAY[i::text], tags => ARRAY['$1']) q")
    if [ "$(head -n 1 <<<"$out")" != "$2" ]; then
        echo "bench: filling $2 results of tag $1 returned: $out" >&2
        return 1
    fi
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" | awk '{printf "%.1f", $1 / 1000}'
}
# µs from wtcache.invalidate() of tag $1 (committed on its own) to the
# wtcache.wait() after it returning (the invalidation is in Redis), then
# the µs of each of the two
timed_invalidate() {
    local out
    out=$("${PSQL[@]}" -At -c '\timing on' -c "SELECT wtcache.invalidate(ARRAY['$1'])" \
                             -c "SELECT wtcache.wait('60s')")
    if ! grep -qx t <<<"$out"; then
        echo "bench: the invalidation of tag $1 was not in Redis after 60 s" >&2
        return 1
    fi
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" \
        | awk '{t[NR] = $1 * 1000} END {printf "%.0f %.0f %.0f", t[1] + t[2], t[1], t[2]}'
}
# what one call for a result of bench:hot100k counted
probe_hot100k() {
    local before
    before=$(query_counts)
    "${PSQL[@]}" -Atc "SELECT count(*) FROM wtcache.query('$TAG_SQL', ARRAY['4242'],
                                                         tags => ARRAY['bench:hot100k'])" >/dev/null
    query_delta "$before"
}

inv10=(); inv100k=()
for run in $(seq "$RUNS"); do
    before=$(query_counts)
    fill10=$(fill_tag bench:hot10 10)
    fill100k=$(fill_tag bench:hot100k 100000)
    filled=$(query_delta "$before")
    # after run 1 every result is invalid but the one the last run's probe
    # stored again after the invalidation
    expect="misses +100010, fills +100010, runs +100010"
    [ "$run" -eq 1 ] || expect="hits +1, misses +100009, fills +100009, runs +100009"
    [ "$filled" = "$expect" ] \
        || warn "run $run: filling the 100,010 tagged results did not store each once; query_stats: $filled"
    # invalidate() queues a row, so its commit flushes WAL: a CHECKPOINT
    # first, so that the flush does not queue behind the disk writing back
    # the load and fills before it (one run took 100 ms instead of 6)
    "${PSQL[@]}" -c "CHECKPOINT"
    t=$(timed_invalidate bench:hot10)
    read -r t10 t10_inv t10_wait <<<"$t"
    inv10+=("$t10")
    # bench:hot10 invalidated, bench:hot100k not yet: a hit
    before_inv=$(probe_hot100k)
    t=$(timed_invalidate bench:hot100k)
    read -r t100k t100k_inv t100k_wait <<<"$t"
    inv100k+=("$t100k")
    after_inv=$(probe_hot100k)
    [ "$before_inv" = "hits +1" ] \
        || warn "run $run: a result of bench:hot100k was not a hit before its tag was invalidated; query_stats: $before_inv"
    [ "$after_inv" = "misses +1, fills +1, runs +1" ] \
        || warn "run $run: a result of bench:hot100k was not a miss after its tag was invalidated; query_stats: $after_inv"
    echo "run $run: invalidate + wait, 10 dependents $t10 us ($t10_inv + $t10_wait)," \
         "100,000 dependents $t100k us ($t100k_inv + $t100k_wait)" \
         "(filled in $fill10 s, $fill100k s); a result of bench:hot100k before: $before_inv; after: $after_inv"
done

# bench_events is done with.  Unwatched without purge, so that the worker's
# repair of the Redis restarted empty below has only pgbench_accounts to
# write.
"${PSQL[@]}" -c "SELECT wtcache.unwatch('bench_events', purge => false)" -c "DROP TABLE bench_events" >/dev/null

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

# Lag, and the logical decoding peer, which needs wal_level = logical: a
# restart, kept for the end so that every figure above is measured with
# the default wal_level (logical makes updates log whole new rows).  The
# Redis restarted empty above makes the worker write pgbench_accounts
# again; that is waited for, so that lag is measured with the worker idle.
"${PSQL[@]}" -c "ALTER SYSTEM SET wal_level = logical"
pg_ctl -D "$WORK/pg" -l "$WORK/pg/server.log" -m fast -w restart >/dev/null
for _ in $(seq 600); do
    [ "$(redis-cli -p "$REDISPORT" dbsize)" -ge "$ROWS" ] \
        && [ "$("${PSQL[@]}" -Atc "SELECT wtcache.wait('10 min')")" = t ] && break
    sleep 1
done
[ "$(redis-cli -p "$REDISPORT" dbsize)" -ge "$ROWS" ] \
    || { echo "bench: the worker did not write pgbench_accounts into the new Redis" >&2; exit 1; }
"${PSQL[@]}" >/dev/null <<'SQL'
CREATE TABLE bench_marker (id int PRIMARY KEY, v bigint NOT NULL);
INSERT INTO bench_marker VALUES (1, 0);
SQL

# The steady load: LAG_TXN_ROWS random rows a transaction, outside the
# probe's rows 1..1000, at the rate that makes LAG_RATE changes a second
# with the probe's 100.
PROBE_RATE=100
LOAD_TPS=$(awk -v r="$LAG_RATE" -v p="$PROBE_RATE" -v n="$LAG_TXN_ROWS" 'BEGIN {printf "%.0f", (r - p) / n}')
{
    for i in $(seq "$LAG_TXN_ROWS"); do printf '\\set a%d random(1001, %s)\n' "$i" "$ROWS"; done
    printf 'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN ('
    for i in $(seq "$LAG_TXN_ROWS"); do printf '%s:a%d' "$([ "$i" -gt 1 ] && echo ', ')" "$i"; done
    printf ');\n'
} > "$WORK/lagload.sql"
# p50 and p99 µs of the probe of target $1 (probe values from $2 down),
# the changes a second the load and the probe made, and the probes that
# timed out
lag_run() {
    local out load p50 p99 n timeouts tps
    # --max-tries: two transactions updating the same rows can deadlock
    pgbench -n -c 4 -j 2 -R "$LOAD_TPS" -T "$((LAG_SECONDS + 6))" --max-tries=10 \
        -f "$WORK/lagload.sql" >"$WORK/lagload.out" 2>&1 &
    load=$!
    sleep 2
    out=$(client lag --target "$1" --rate "$PROBE_RATE" --seconds "$LAG_SECONDS" --base "$2")
    if ! wait "$load"; then
        cat "$WORK/lagload.out" >&2
        return 1
    fi
    read -r p50 p99 n timeouts <<<"$out"
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/lagload.out")
    awk -v a="$p50" -v b="$p99" -v t="$tps" -v k="$LAG_TXN_ROWS" -v n="$n" -v s="$LAG_SECONDS" -v o="$timeouts" \
        'BEGIN {printf "%s %s %.0f %s", a, b, t * k + n / s, o}'
}

DECODER=
# the peer: a slot, and pg_recvlogical feeding bench_decode.py, which
# writes ld:<table>:<key> into Redis database 1
start_decoder() {
    "${PSQL[@]}" -c "SELECT FROM pg_create_logical_replication_slot('bench', 'test_decoding')" >/dev/null
    "$PY" "$HERE/bench_decode.py" --redis-port "$REDISPORT" --db 1 --prefix ld: \
        --key public.pgbench_accounts=aid --key public.bench_marker=id \
        -- pg_recvlogical -d "$PGDATABASE" --slot bench --start -f - \
           -o include-xids=0 -o skip-empty-xacts=1 >/dev/null 2>>"$WORK/decode.log" &
    DECODER=$!
    BG_PIDS+=("$DECODER")
    sleep 1
}
drop_slot() {
    for _ in $(seq 100); do
        [ "$("${PSQL[@]}" -Atc "SELECT active FROM pg_replication_slots WHERE slot_name = 'bench'")" = f ] && break
        sleep 0.1
    done
    "${PSQL[@]}" -c "SELECT FROM pg_drop_replication_slot('bench')" >/dev/null
}
stop_decoder() {
    kill -TERM "$DECODER"
    if ! wait "$DECODER"; then
        tail -n 5 "$WORK/decode.log" >&2
        echo "bench: the logical decoding peer failed" >&2
        exit 1
    fi
    local p pids=()
    for p in "${BG_PIDS[@]}"; do [ "$p" = "$DECODER" ] || pids+=("$p"); done
    BG_PIDS=("${pids[@]}")
    DECODER=
    drop_slot
}
# changes a second from the commit of the UPDATE of every row to
# pg_recvlogical having written it all to a file: decoding, without a
# consumer
decode_alone() {
    local rl out
    "${PSQL[@]}" -c "SELECT FROM pg_create_logical_replication_slot('bench', 'test_decoding')" >/dev/null
    pg_recvlogical -d "$PGDATABASE" --slot bench --start -f "$WORK/decoded.txt" \
        -o include-xids=0 -o skip-empty-xacts=1 2>>"$WORK/decode.log" &
    rl=$!
    sleep 1
    out=$(client drain --target file --file "$WORK/decoded.txt")
    kill -INT "$rl"
    wait "$rl" || true
    rm -f "$WORK/decoded.txt"
    drop_slot
    echo "${out#* }"
}

# what made a lag figure other than it says, printed under the table; $1:
# whose probe, $2: changes a second reached, $3: probes that timed out
LAG_NOTES=()
note_lag() {
    [ "$2" -ge "$((LAG_RATE * 95 / 100))" ] \
        || LAG_NOTES+=("run $run: the load under the $1 probe reached $2 changes/s, not $LAG_RATE")
    [ "$3" = 0 ] \
        || LAG_NOTES+=("run $run: $3 probes of $1 saw no change in Redis within 5 s (counted as 5 s)")
}

lag_wtc_p50=(); lag_wtc_p99=(); lag_ld_p50=(); lag_ld_p99=(); drain_ld=(); drain_file=()
for run in $(seq "$RUNS"); do
    capture_with wtcache_capture_upd
    settle
    read -r a b rate_wtc to_wtc <<<"$(lag_run wtcache $((-1000000 * (2 * run - 1))))"
    lag_wtc_p50+=("$a"); lag_wtc_p99+=("$b")

    capture_with none
    settle
    start_decoder
    read -r a b rate_ld to_ld <<<"$(lag_run ld $((-1000000 * 2 * run)))"
    lag_ld_p50+=("$a"); lag_ld_p99+=("$b")
    settle
    read -r upd_ms rate <<<"$(client drain --target ld)"
    drain_ld+=("$rate")
    stale_ld=$(client stale --target ld --upto "$STALE_ROWS")
    [ "$stale_ld" = 0 ] \
        || { echo "bench: the logical decoding peer left $stale_ld of $STALE_ROWS keys unlike the table" >&2; exit 1; }
    stop_decoder
    consumer=$(sed -n 's/^bench_decode: //p' "$WORK/decode.log" | tail -n 1)

    settle
    drain_file+=("$(decode_alone)")
    note_lag wtcache "$rate_wtc" "$to_wtc"
    note_lag "logical decoding" "$rate_ld" "$to_ld"
    echo "run $run: lag p50/p99, wtcache ${lag_wtc_p50[-1]}/${lag_wtc_p99[-1]} us at $rate_wtc changes/s," \
         "logical decoding ${lag_ld_p50[-1]}/${lag_ld_p99[-1]} us at $rate_ld changes/s;" \
         "logical decoding drain ${drain_ld[-1]}/s (UPDATE $upd_ms ms; consumer: $consumer)," \
         "pg_recvlogical alone ${drain_file[-1]}/s"
done

# how the write load's cost compares with the peer's and grows
. "$HERE/lib/bench_load.sh"
peer_write_runs
client_scaling_runs
databases_runs

narrow_runs
wait_runs
audit_runs
warm_runs

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((($(date +%s) - STARTED + 30) / 60))

dc_med=$(median "${drain_cluster[@]}")
d_med=$(median "${drain[@]}"); dl_med=$(median "${drain_ld[@]}"); df_med=$(median "${drain_file[@]}")
on_p=$(median "${tps_on_plain[@]}"); on_w=$(median "${tps_on_wtc[@]}"); on_o=$(median "${tps_on_outbox[@]}")
off_p=$(median "${tps_off_plain[@]}"); off_w=$(median "${tps_off_wtc[@]}"); off_o=$(median "${tps_off_outbox[@]}")
lp_med=$(median "${lat_plain[@]}"); lw_med=$(median "${lat_wtc[@]}"); la_med=$(median "${lat_app[@]}")
sw_max=$(stats "${stale_wtc[@]}" | cut -d' ' -f3)
w50=$(median "${lag_wtc_p50[@]}"); w99=$(median "${lag_wtc_p99[@]}")
l50=$(median "${lag_ld_p50[@]}"); l99=$(median "${lag_ld_p99[@]}")
s_med=$(median "${sel[@]}"); g_med=$(median "${get[@]}"); h_med=$(median "${get100[@]}"); m_med=$(median "${getmany[@]}")
sd_med=$(median "${sel_down[@]}"); gd_med=$(median "${get_down[@]}")
qd_med=$(median "${qdirect[@]}"); qc_med=$(median "${qcached[@]}")
i_med=$(median "${inv10[@]}"); j_med=$(median "${inv100k[@]}")

echo
echo "machine: $MACHINE"
echo "load average before: $LOAD_BEFORE; after: $LOAD_AFTER; $ELAPSED min"
table_header
capture_lines
line "pgbench -N TPS, sync commit on, unwatched" "/s" "${tps_on_plain[*]}" "1.00x"
line "pgbench -N TPS, sync commit on, wtcache" "/s" "${tps_on_wtc[*]}" "$(ratio "$on_w" "$on_p")" ">= 0.97x"
line "pgbench -N TPS, sync commit on, outbox (peer)" "/s" "${tps_on_outbox[*]}" "$(ratio "$on_o" "$on_p")" "(about 0.925x here)"
line "pgbench -N TPS, sync commit off, unwatched" "/s" "${tps_off_plain[*]}" "1.00x"
line "pgbench -N TPS, sync commit off, wtcache" "/s" "${tps_off_wtc[*]}" "$(ratio "$off_w" "$off_p")" ">= 0.93x"
line "pgbench -N TPS, sync commit off, outbox (peer)" "/s" "${tps_off_outbox[*]}" "$(ratio "$off_o" "$off_p")" "(about 0.88x here)"
ldp_on=$(median "${ld_on_plain[@]}"); ldw_on=$(median "${ld_on_wtc[@]}"); ldl_on=$(median "${ld_on_peer[@]}")
ldp_off=$(median "${ld_off_plain[@]}"); ldw_off=$(median "${ld_off_wtc[@]}"); ldl_off=$(median "${ld_off_peer[@]}")
line "wal_level logical: pgbench -N TPS, sync on, unwatched" "/s" "${ld_on_plain[*]}" "1.00x"
line "  wtcache" "/s" "${ld_on_wtc[*]}" "$(ratio "$ldw_on" "$ldp_on")" "> the peer's"
line "  logical decoding + consumer running (peer)" "/s" "${ld_on_peer[*]}" "$(ratio "$ldl_on" "$ldp_on")"
line "wal_level logical: pgbench -N TPS, sync off, unwatched" "/s" "${ld_off_plain[*]}" "1.00x"
line "  wtcache" "/s" "${ld_off_wtc[*]}" "$(ratio "$ldw_off" "$ldp_off")" "> the peer's"
line "  logical decoding + consumer running (peer)" "/s" "${ld_off_peer[*]}" "$(ratio "$ldl_off" "$ldp_off")"
for c in "${SCALE_CLIENTS[@]}"; do
    eval "sp=(\"\${scale_plain_$c[@]}\"); sw=(\"\${scale_wtc_$c[@]}\"); s50=(\"\${scale_p50_$c[@]}\"); s99=(\"\${scale_p99_$c[@]}\")"
    line "pgbench -N TPS, sync on, $c client(s), unwatched" "/s" "${sp[*]}" "1.00x"
    line "  wtcache" "/s" "${sw[*]}" "$(ratio "$(median "${sw[@]}")" "$(median "${sp[@]}")")"
    line "  lag p50 / p99 under it" " us" "${s50[*]}" "" "p99 median $(median "${s99[@]}") us"
done
line "$DB_COUNT databases written at once, TPS, unwatched" "/s" "${dbs_plain[*]}" "1.00x"
line "  wtcache" "/s" "${dbs_wtc[*]}" "$(ratio "$(median "${dbs_wtc[@]}")" "$(median "${dbs_plain[@]}")")"
line "  the $DB_COUNT workers' CPU per change" " us" "${dbs_us[*]}" ""
line "  private memory of the largest worker" " kB" "${dbs_rss_max_kb[*]}" ""
line "  private memory of all $DB_COUNT workers" " kB" "${dbs_rss_sum_kb[*]}" ""
line "  the same once idle, largest worker" " kB" "${dbs_idle_max_kb[*]}" ""
line "  the same once idle, all $DB_COUNT workers" " kB" "${dbs_idle_sum_kb[*]}" ""
line "worker CPU per change, pgbench -N, sync commit on" " us" "$(cat "$WORK/worker_us.on")" ""
line "worker CPU per change, pgbench -N, sync commit off" " us" "$(cat "$WORK/worker_us.off")" "" "<= 20 us"
line "write p50, one client, unwatched" " us" "${lat_plain[*]}" "1.00x"
line "write p50, watched by wtcache" " us" "${lat_wtc[*]}" "$(ratio "$lw_med" "$lp_med")"
line "write p50, app write-through: UPDATE, SET (peer)" " us" "${lat_app[*]}" "$(ratio "$la_med" "$lp_med")"
line "stale keys after psql UPDATE of $STALE_ROWS, app (peer)" "" "${stale_app[*]}" ""
line "stale keys after psql UPDATE of $STALE_ROWS, wtcache" "" "${stale_wtc[*]}" "" "0 (after wtcache.wait())"
printf '%-52s %12s %12s %12s %8s\n' "redis-benchmark SET -P 64, one connection" "$(printf '%.0f/s' "${redis_set:-0}")" "" "" "1.00x"
line "drain of the UPDATE into Redis, wtcache" "/s" "${drain[*]}" "$(ratio "$d_med" "${redis_set:-1}")" ">= 0.50x (of redis-benchmark)"
partitioned_drain_line
line "drain into a 3-master Redis Cluster, wtcache" "/s" "${drain_cluster[*]}" "$(ratio "$dc_med" "$d_med")" ">= 1.00x (next to one Redis)"
line "Redis CPU a row in that drain, one Redis" " ns" "${redis_row_ns[*]}" "1.00x"
line "Redis CPU a row, 3-master Cluster (all masters)" " ns" "${redis_row_ns_cluster[*]}" \
    "$(ratio "$(median "${redis_row_ns_cluster[@]}")" "$(median "${redis_row_ns[@]}")")"
line "drain, logical decoding + consumer (peer)" "/s" "${drain_ld[*]}" "$(ratio "$dl_med" "${redis_set:-1}")"
line "decoding alone, pg_recvlogical to a file" "/s" "${drain_file[*]}" "$(ratio "$df_med" "${redis_set:-1}")"
line "lag p50 at $LAG_RATE changes/s, wtcache" " us" "${lag_wtc_p50[*]}" "1.00x" "< 1500 us and < the peer's"
line "lag p50, logical decoding (peer)" " us" "${lag_ld_p50[*]}" "$(ratio "$l50" "$w50")"
line "lag p99 at $LAG_RATE changes/s, wtcache" " us" "${lag_wtc_p99[*]}" "1.00x" "< 10000 us and < the peer's"
line "lag p99, logical decoding (peer)" " us" "${lag_ld_p99[*]}" "$(ratio "$l99" "$w99")"
line "SELECT by primary key, queries" "/s" "${sel[*]}" "1.00x"
line "wtcache.get, one key (Redis hit), calls" "/s" "${get[*]}" "$(ratio "$s_med" "$g_med")" "<= 2.00x (time per call)"
line "wtcache.get, 100 calls of one key each, keys" "/s" "${get100[*]}" "1.00x"
line "wtcache.get_many, 100 keys in one call, keys" "/s" "${getmany[*]}" "$(ratio "$m_med" "$h_med")" ">= 10x (cheaper per key)"
if [ ${#drain_tls[@]} -gt 0 ]; then
    dtcp=$(median "${drain_tcp[@]}"); dtls=$(median "${drain_tls[@]}")
    gtcp=$(median "${get_tcp[@]}"); gtls=$(median "${get_tls[@]}")
    line "drain of the UPDATE, plain TCP (TLS section)" "/s" "${drain_tcp[*]}" "1.00x"
    line "drain of the UPDATE, TLS" "/s" "${drain_tls[*]}" "$(ratio "$dtls" "$dtcp")" "(next to TCP)"
    line "wtcache.get, plain TCP (TLS section), calls" "/s" "${get_tcp[*]}" "1.00x"
    line "wtcache.get, TLS, calls" "/s" "${get_tls[*]}" "$(ratio "$gtcp" "$gtls")" "(time per call, next to TCP)"
fi
line "SELECT by primary key, Redis down, queries" "/s" "${sel_down[*]}" "1.00x" "(Redis down)"
line "wtcache.get, Redis down (table), calls" "/s" "${get_down[*]}" "$(ratio "$sd_med" "$gd_med")" "(Redis down; time per call)"
line "GROUP BY over $EVENT_ROWS rows, run" " us" "${qdirect[*]}" "1.00x"
line "wtcache.query of that GROUP BY, Redis hit" " us" "${qcached[*]}" "$(ratio "$qd_med" "$qc_med")" ">= 20x (faster)"
line "invalidate + wait, tag of 10 results" " us" "${inv10[*]}" "1.00x"
line "invalidate + wait, tag of 100,000 results" " us" "${inv100k[*]}" "$(ratio "$j_med" "$i_med")" "~1x (independent of dependents)"
narrow_lines
wait_lines
audit_lines
warm_lines

capture_goal
goal "write load, synchronous_commit on: $(ratio "$on_w" "$on_p") of unwatched TPS, goal >= 0.97x" "$on_w / $on_p >= 0.97"
goal "write load, synchronous_commit off: $(ratio "$off_w" "$off_p") of unwatched TPS, goal >= 0.93x" "$off_w / $off_p >= 0.93"
wc_off=$(stats $(cat "$WORK/worker_us.off") | cut -d' ' -f1)
goal "worker CPU per change, pgbench -N, sync commit off: $wc_off us, goal <= 20 us" "$wc_off <= 20"
goal "no stale key after a batch UPDATE from psql: at most $sw_max" "$sw_max == 0"
goal "write load beside the logical decoding peer, sync on: wtcache $(ratio "$ldw_on" "$ldp_on"), peer $(ratio "$ldl_on" "$ldp_on"), goal: wtcache costs writers less" "$ldw_on > $ldl_on"
goal "write load beside the logical decoding peer, sync off: wtcache $(ratio "$ldw_off" "$ldp_off"), peer $(ratio "$ldl_off" "$ldp_off"), goal: wtcache costs writers less" "$ldw_off > $ldl_off"
goal "drain: $d_med changes/s, $(ratio "$d_med" "${redis_set:-1}") of redis-benchmark's pipelined SET, goal >= 0.50x" "$d_med / ${redis_set:-1} >= 0.5"
goal "drain into a 3-master Cluster: $(ratio "$dc_med" "$d_med") of one Redis, goal >= 1.00x" "$dc_med / $d_med >= 1"
goal "lag p50 at $LAG_RATE changes/s: $w50 us (peer $l50 us), goal < 1500 us and below the peer" "$w50 < 1500 && $w50 < $l50"
goal "lag p99 at $LAG_RATE changes/s: $w99 us (peer $l99 us), goal < 10000 us and below the peer" "$w99 < 10000 && $w99 < $l99"
goal "wtcache.get: $(ratio "$s_med" "$g_med") the time of a primary-key SELECT, goal <= 2.00x" "$s_med / $g_med <= 2"
goal "get_many of 100: $(ratio "$m_med" "$h_med") cheaper per key than 100 gets, goal >= 10x" "$m_med / $h_med >= 10"
goal "cached query hit: $(ratio "$qd_med" "$qc_med") faster than the query, goal >= 20x" "$qd_med / $qc_med >= 20"
narrow_goal
audit_goal
warm_goal
echo
echo "goals:"
printf '  %s\n' "${GOALS[@]}"
if [ ${#LAG_NOTES[@]} -gt 0 ]; then
    echo "the lag figures were not measured quite as their lines say:"
    printf '  %s\n' "${LAG_NOTES[@]}"
fi

if [ ${#WARNINGS[@]} -gt 0 ]; then
    echo
    echo "WARNING: the cached query figures above may not measure what they name:"
    printf '  %s\n' "${WARNINGS[@]}"
    exit 1
fi
