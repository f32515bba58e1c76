# The benchmark's replica acknowledgements (sourced by test/bench.sh; alone
# with BENCH_ONLY=wait): what wtcache.redis_wait_replicas = 1 costs.  A
# replica of the bench's Redis on loopback (redis-server --replicaof), and,
# alternated run by run with the setting 0 and 1: the drain of an UPDATE of
# every pgbench_accounts row (its commit to wtcache.wait() returning), and
# the commit-to-Redis lag under a steady BENCH_WAIT_LAG_RATE changes a
# second (default BENCH_LAG_RATE: pgbench -R, BENCH_LAG_TXN_ROWS rows a
# transaction) for BENCH_WAIT_LAG_SECONDS (default 10), probed as the lag
# section does (bench_client.py lag: 100 probes a second, each polling
# Redis until its key holds the commit's value).  With WAIT on, also the
# time the worker spent in WAIT per round (wtcache.replica_acks()).
# Needs PSQL, PY, HERE, RUNS, ROWS, WORK, REDISPORT, LAG_RATE,
# LAG_TXN_ROWS, BG_PIDS, delivered, line, ratio, median, stats, free_port
# and start_redis from the caller.

WAIT_LAG_SECONDS=${BENCH_WAIT_LAG_SECONDS:-10}
WAIT_LAG_RATE=${BENCH_WAIT_LAG_RATE:-$LAG_RATE}

wait_client() { "$PY" "$HERE/bench_client.py" --redis-port "$REDISPORT" "$@"; }

wait_setup() {
    local _
    WAIT_REPLICA_PORT=$(free_port)
    start_redis "$WORK/replica" "$WAIT_REPLICA_PORT" --replicaof 127.0.0.1 "$REDISPORT"
    for _ in $(seq 600); do
        redis-cli -p "$WAIT_REPLICA_PORT" info replication | grep -q 'master_link_status:up' && break
        sleep 0.1
    done
    redis-cli -p "$WAIT_REPLICA_PORT" info replication | grep -q 'master_link_status:up' \
        || { echo "bench: the replica did not sync with the bench's Redis" >&2; exit 1; }
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER wtcache_capture_upd" >/dev/null
    delivered
    # the lag load: LAG_TXN_ROWS random rows a transaction, outside the
    # probe's rows 1..1000, making WAIT_LAG_RATE changes a second with the
    # probe's 100
    WAIT_LOAD_TPS=$(awk -v r="$WAIT_LAG_RATE" -v n="$LAG_TXN_ROWS" 'BEGIN {printf "%.0f", (r - 100) / n}')
    {
        for i in $(seq "$LAG_TXN_ROWS"); do printf '\\set a%d random(1001, %s)\n' "$i" "$ROWS"; done
        printf 'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN ('
        for i in $(seq "$LAG_TXN_ROWS"); do printf '%s:a%d' "$([ "$i" -gt 1 ] && echo ', ')" "$i"; done
        printf ');\n'
    } >"$WORK/waitload.sql"
}

# wtcache.redis_wait_replicas = $1, once the worker applies it
wait_set() {
    local _
    "${PSQL[@]}" -c "ALTER SYSTEM SET wtcache.redis_wait_replicas = $1" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 200); do
        [ "$("${PSQL[@]}" -Atc "SELECT wait_replicas FROM wtcache.replica_acks() WHERE database_oid =
               (SELECT oid FROM pg_database WHERE datname = current_database())")" = "$1" ] && return 0
        sleep 0.05
    done
    echo "bench: the worker did not take wtcache.redis_wait_replicas = $1" >&2
    exit 1
}

# rounds of WAIT and seconds in them so far
wait_counts() {
    "${PSQL[@]}" -Atc "SELECT waits, wait_seconds FROM wtcache.replica_acks() WHERE database_oid =
        (SELECT oid FROM pg_database WHERE datname = current_database())" | tr '|' ' '
}

# changes a second from the commit of the UPDATE of every row to wait()
wait_drain() {
    local ms
    delivered
    "${PSQL[@]}" -c "VACUUM pgbench_accounts" -c "VACUUM wtcache.queue" -c "CHECKPOINT" >/dev/null
    "${PSQL[@]}" -c "UPDATE pgbench_accounts SET abalance = abalance + 1" >/dev/null
    ms=$("${PSQL[@]}" -c '\timing on' -c "SELECT wtcache.wait('600s')" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    awk -v r="$ROWS" -v ms="$ms" 'BEGIN {printf "%.0f", r / (ms / 1000)}'
}

# p50 and p99 µs of the probe under the steady load, and the probes that
# timed out
wait_lag() {
    local load out p50 p99 n timeouts
    delivered
    pgbench -n -c 4 -j 2 -R "$WAIT_LOAD_TPS" -T "$((WAIT_LAG_SECONDS + 4))" --max-tries=10 \
        -f "$WORK/waitload.sql" >"$WORK/waitload.out" 2>&1 &
    load=$!
    BG_PIDS+=("$load")
    sleep 2
    out=$(wait_client lag --target wtcache --rate 100 --seconds "$WAIT_LAG_SECONDS" --base "$1")
    wait "$load" || { cat "$WORK/waitload.out" >&2; return 1; }
    read -r p50 p99 n timeouts <<<"$out"
    echo "$p50 $p99 $timeouts"
}

# fills wait_drain0/1, wait_p50_0/1, wait_p99_0/1, wait_round_us
wait_runs() {
    local run w d p50 p99 to c0 s0 c1 s1 base=-1000000000
    wait_drain0=(); wait_drain1=(); wait_p50_0=(); wait_p50_1=(); wait_p99_0=(); wait_p99_1=(); wait_round_us=()
    WAIT_TIMEOUTS=0
    wait_setup
    for run in $(seq "$RUNS"); do
        for w in 0 1; do
            wait_set "$w"
            read -r c0 s0 <<<"$(wait_counts)"
            d=$(wait_drain)
            read -r p50 p99 to <<<"$(wait_lag "$base")"
            base=$((base - 100000))
            read -r c1 s1 <<<"$(wait_counts)"
            WAIT_TIMEOUTS=$((WAIT_TIMEOUTS + to))
            if [ "$w" = 0 ]; then
                wait_drain0+=("$d"); wait_p50_0+=("$p50"); wait_p99_0+=("$p99")
            else
                wait_drain1+=("$d"); wait_p50_1+=("$p50"); wait_p99_1+=("$p99")
                wait_round_us+=("$(awk -v c=$((c1 - c0)) -v a="$s0" -v b="$s1" \
                    'BEGIN {printf "%.0f", c ? (b - a) * 1e6 / c : 0}')")
            fi
        done
        echo "run $run: drain ${wait_drain0[-1]}/s without WAIT, ${wait_drain1[-1]}/s with WAIT 1;" \
             "lag p50/p99 ${wait_p50_0[-1]}/${wait_p99_0[-1]} us without, ${wait_p50_1[-1]}/${wait_p99_1[-1]} us with" \
             "(${wait_round_us[-1]} us a round of WAIT)"
    done
    wait_set 0
    "${PSQL[@]}" -c "ALTER SYSTEM RESET wtcache.redis_wait_replicas" -c "SELECT pg_reload_conf()" >/dev/null
}

wait_lines() {
    local d0 d1 a0 a1 b0 b1
    d0=$(median "${wait_drain0[@]}"); d1=$(median "${wait_drain1[@]}")
    a0=$(median "${wait_p50_0[@]}"); a1=$(median "${wait_p50_1[@]}")
    b0=$(median "${wait_p99_0[@]}"); b1=$(median "${wait_p99_1[@]}")
    line "drain of the UPDATE into Redis, no WAIT" "/s" "${wait_drain0[*]}" "1.00x"
    line "  with redis_wait_replicas = 1 (a local replica)" "/s" "${wait_drain1[*]}" "$(ratio "$d1" "$d0")"
    line "lag p50 at $WAIT_LAG_RATE changes/s, no WAIT" " us" "${wait_p50_0[*]}" "1.00x"
    line "  with redis_wait_replicas = 1" " us" "${wait_p50_1[*]}" "$(ratio "$a1" "$a0")"
    line "lag p99, no WAIT" " us" "${wait_p99_0[*]}" "1.00x"
    line "  with redis_wait_replicas = 1" " us" "${wait_p99_1[*]}" "$(ratio "$b1" "$b0")"
    line "  time in WAIT per round, worker's own count" " us" "${wait_round_us[*]}" ""
    [ "$WAIT_TIMEOUTS" = 0 ] || echo "note: $WAIT_TIMEOUTS probes saw no change within 5 s (counted as 5 s)"
}
