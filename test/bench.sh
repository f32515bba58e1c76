#!/usr/bin/env bash
# wtcache benchmark: prints ratios measured in one run on this machine.
#
#   bash test/bench.sh            (root: builds, installs, runs as postgres)
#   BENCH_RUNS=5 BENCH_SCALE=10 bash test/bench.sh
#   BENCH_NO_INSTALL=1 bash test/bench.sh   (root: the extension as installed)
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
#                 (reads fall back to the table);
#   cached query  a GROUP BY over bench_events (BENCH_EVENT_ROWS rows,
#                 default 11,000,000: about 1 s here) run directly, next to
#                 SELECT * FROM wtcache.query() of the same text once its
#                 result is in Redis, from one pgbench client (-M prepared;
#                 a few transactions of the direct query, BENCH_READ_SECONDS
#                 of the cached one); query_stats() shows they were all hits;
#   invalidation  wtcache.invalidate() of a tag, committed, plus the
#                 wtcache.wait() until it is in Redis, for a tag that 10
#                 cached query results depend on and one that 100,000 do,
#                 all of them refilled before every run; a result of the
#                 second tag is a hit before and a miss after.
# Starts its own PostgreSQL and Redis on free loopback ports; stops them.
set -euo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
. "$HERE/lib/servers.sh"
if [ "$(id -u)" -eq 0 ]; then
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
    run_as_postgres_after_install "$SELF" "$(dirname "$HERE")" "$@"
fi

RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_SCALE:-10}
READ_SECONDS=${BENCH_READ_SECONDS:-5}
EVENT_ROWS=${BENCH_EVENT_ROWS:-11000000}
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

read -r qd_med qd_min qd_max <<<"$(stats "${qdirect[@]}")"
read -r qc_med qc_min qc_max <<<"$(stats "${qcached[@]}")"
read -r i_med i_min i_max <<<"$(stats "${inv10[@]}")"
read -r j_med j_min j_max <<<"$(stats "${inv100k[@]}")"
printf '%-44s %9s us %7s us %7s us %8s\n' "GROUP BY over $EVENT_ROWS rows, run" "$qd_med" "$qd_min" "$qd_max" "1.00x"
printf '%-44s %9s us %7s us %7s us %7.2fx %s\n' "wtcache.query of that GROUP BY, Redis hit" \
    "$qc_med" "$qc_min" "$qc_max" "$(awk -v a="$qd_med" -v b="$qc_med" 'BEGIN {print a / b}')" \
    ">= 20x (faster)"
printf '%-44s %9s us %7s us %7s us %8s\n' "invalidate + wait, tag of 10 results" "$i_med" "$i_min" "$i_max" "1.00x"
printf '%-44s %9s us %7s us %7s us %7.2fx %s\n' "invalidate + wait, tag of 100,000 results" \
    "$j_med" "$j_min" "$j_max" "$(awk -v a="$j_med" -v b="$i_med" 'BEGIN {print a / b}')" \
    "~1x (independent of dependents)"

if [ ${#WARNINGS[@]} -gt 0 ]; then
    echo
    echo "WARNING: the cached query figures above may not measure what they name:"
    printf '  %s\n' "${WARNINGS[@]}"
    exit 1
fi
