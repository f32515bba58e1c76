# The benchmark's live consistency audit (sourced by test/bench.sh; alone
# with BENCH_ONLY=audit): what wtcache.audit_rate = BENCH_AUDIT_RATE
# (default 1,000 keys a second) costs the writers and the drain, next to
# the audit off, alternated RUNS times in one run.  pgbench_accounts is
# watched with its rows in Redis (the wtcache trigger enabled, the table
# warmed), so the audit compares real keys.  A run, for each setting:
#   writers  TPS of pgbench -N (2 clients, BENCH_AUDIT_SECONDS, default 10)
#            on the watched table, the worker delivering (and auditing);
#   drain    an UPDATE of BENCH_AUDIT_DRAIN_ROWS rows (default 200,000):
#            from its commit until wtcache.wait() returns, changes a second.
# Also the keys the audit compared a second during the write load, and
# the mismatches it confirmed (goal: none).  Needs PSQL, RUNS, WORK,
# delivered, line, goal, median, ratio and stats from the caller.

AUDIT_RATE=${BENCH_AUDIT_RATE:-1000}
AUDIT_SECONDS=${BENCH_AUDIT_SECONDS:-10}
AUDIT_DRAIN_ROWS=${BENCH_AUDIT_DRAIN_ROWS:-200000}

# the audit's figures of this database: checked mismatched missing
audit_counts() {
    "${PSQL[@]}" -Atc "SELECT checked, mismatched + missing FROM wtcache.audit_stats()
                        WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())" \
        | tr '|' ' '
}

# set wtcache.audit_rate and wait until this session sees it (the worker
# gets the same SIGHUP)
audit_set_rate() {
    "${PSQL[@]}" -c "ALTER SYSTEM SET wtcache.audit_rate = $1" -c "SELECT pg_reload_conf()" >/dev/null
    while [ "$("${PSQL[@]}" -Atc "SHOW wtcache.audit_rate")" != "$1" ]; do sleep 0.1; done
    sleep 0.5
}

# one phase at rate $1: appends to the arrays named audit_tps_$2,
# audit_drain_$2, and to audit_keys_s
audit_phase() {
    local rate=$1 tag=$2 c0 c1 tps t0 t1 drain
    audit_set_rate "$rate"
    delivered
    read -r c0 _ <<<"$(audit_counts)"
    tps=$(pgbench -n -N -c 2 -j 2 -T "$AUDIT_SECONDS" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
    read -r c1 _ <<<"$(audit_counts)"
    delivered
    # from the commit (psql returns once it is) until all of it is in Redis
    "${PSQL[@]}" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $AUDIT_DRAIN_ROWS"
    t0=$(date +%s%N)
    delivered
    t1=$(date +%s%N)
    drain=$(awk -v n="$AUDIT_DRAIN_ROWS" -v ns=$((t1 - t0)) 'BEGIN {printf "%.0f", n * 1e9 / ns}')
    eval "audit_tps_$tag+=(\"$tps\"); audit_drain_$tag+=(\"$drain\")"
    if [ "$rate" -gt 0 ]; then
        audit_keys_s+=("$(awk -v c=$((c1 - c0)) -v s="$AUDIT_SECONDS" 'BEGIN {printf "%.0f", c / s}')")
    fi
    echo "  audit_rate $rate: pgbench -N $tps TPS; drain of $AUDIT_DRAIN_ROWS changes at $drain/s" \
         "$([ "$rate" -gt 0 ] && echo "; ${audit_keys_s[-1]} keys audited/s under the writers")"
}

audit_runs() {
    local run
    audit_tps_off=(); audit_tps_on=(); audit_drain_off=(); audit_drain_on=(); audit_keys_s=()
    # the table's rows in Redis, its capture on: the audit has keys to compare
    "${PSQL[@]}" >/dev/null <<'SQL'
ALTER TABLE pgbench_accounts ENABLE TRIGGER wtcache_capture_upd;
SELECT FROM wtcache.warm('pgbench_accounts');
SQL
    delivered
    for run in $(seq "$RUNS"); do
        echo "run $run:"
        audit_phase 0 off
        audit_phase "$AUDIT_RATE" on
    done
    audit_set_rate 0
    read -r _ audit_found <<<"$(audit_counts)"
    "${PSQL[@]}" -c "ALTER SYSTEM RESET wtcache.audit_rate" -c "SELECT pg_reload_conf()" \
        -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER wtcache_capture_upd" >/dev/null
}

audit_lines() {
    line "pgbench -N TPS, audit off" "" "${audit_tps_off[*]}" ""
    line "  audit_rate = $AUDIT_RATE" "" "${audit_tps_on[*]}" \
        "$(ratio "$(median "${audit_tps_on[@]}")" "$(median "${audit_tps_off[@]}")")" ">= 0.97x"
    line "drain of $AUDIT_DRAIN_ROWS changes, audit off" "/s" "${audit_drain_off[*]}" ""
    line "  audit_rate = $AUDIT_RATE" "/s" "${audit_drain_on[*]}" \
        "$(ratio "$(median "${audit_drain_on[@]}")" "$(median "${audit_drain_off[@]}")")" ">= 0.95x"
    line "  keys audited under the writers" "/s" "${audit_keys_s[*]}" ""
    printf '%-52s %12s %12s %12s %8s %s\n' "  mismatches confirmed, all runs" "$audit_found" "" "" "" "0"
}

audit_goal() {
    local w d
    w=$(ratio "$(median "${audit_tps_on[@]}")" "$(median "${audit_tps_off[@]}")")
    d=$(ratio "$(median "${audit_drain_on[@]}")" "$(median "${audit_drain_off[@]}")")
    goal "audit at $AUDIT_RATE keys/s: writers at ${w} of the audit off, goal >= 0.97x" "${w%x} >= 0.97"
    goal "audit at $AUDIT_RATE keys/s: drain at ${d} of the audit off, goal >= 0.95x" "${d%x} >= 0.95"
    goal "audit: $audit_found mismatches confirmed on a healthy run, goal 0" "$audit_found == 0"
}
