# The benchmark's long work (sourced by test/bench.sh; alone with
# BENCH_ONLY=warm): the commit-to-Redis lag of live changes while a warm
# of a large table is delivered, next to the same lag with no long work.
# bw_items holds BENCH_WARM_ROWS rows (default 2,000,000; the issue's
# 10,000,000 takes a while to load and warm here), watched.  Each run
# probes the lag of changes to pgbench_accounts' probe rows (the lag
# figure's client: one change committed at a time, BENCH_WARM_PROBE_RATE a
# second, default 100, each polled in Redis until it is there) for
# BENCH_WARM_LAG_SECONDS (default 10) with nothing else queued, then
# starts wtcache.warm('bw_items') and, once it is committed and being
# delivered (wtcache.progress says so), probes again; the warm's delivery
# rate comes from wtcache.progress_finished.  wtcache.bulk_rate is 0
# (unlimited): live changes pass the warm by priority, not by a limit.
# Needs PSQL, PY, HERE, REDISPORT, RUNS, BG_PIDS, delivered, line, ratio,
# goal, median and stats from the caller.

WARM_ROWS=${BENCH_WARM_ROWS:-2000000}
WARM_LAG_SECONDS=${BENCH_WARM_LAG_SECONDS:-10}
WARM_PROBE_RATE=${BENCH_WARM_PROBE_RATE:-100}

warm_setup() {
    "${PSQL[@]}" >/dev/null <<SQL
CREATE TABLE bw_items (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO bw_items SELECT i, 'item ' || i, 0 FROM generate_series(1, $WARM_ROWS) i;
VACUUM ANALYZE bw_items;
SELECT FROM wtcache.watch('bw_items');
SQL
    # the probe's rows are pgbench_accounts', captured by wtcache alone
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER wtcache_capture_upd" \
        -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER outbox_capture"
    delivered
}

# the lag figure's probe (test/bench_client.py lag): "p50 p99 n timeouts"
warm_probe() {
    "$PY" "$HERE/bench_client.py" --redis-port "$REDISPORT" lag --target wtcache \
        --rate "$WARM_PROBE_RATE" --seconds "$WARM_LAG_SECONDS" --base "$1"
}

# "phase delivered total" of the warm of bw_items in wtcache.progress, or ""
warm_state() {
    "${PSQL[@]}" -Atc "SELECT phase || ' ' || rows_delivered || ' ' || rows_total FROM wtcache.progress
                        WHERE operation = 'warm' AND table_name = 'bw_items'::regclass"
}

# waits until condition $1 ("delivering" or "gone") holds, up to 10 minutes
warm_wait() {
    local deadline=$((SECONDS + 600)) s
    while :; do
        s=$(warm_state)
        case "$1" in
            delivering) [ "${s%% *}" = delivering ] && return 0 ;;
            gone) [ -z "$s" ] && return 0 ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || { echo "bench: the warm did not reach '$1' in 10 minutes" >&2; exit 1; }
        sleep 0.05
    done
}

# fills warm_idle50/99, warm_busy50/99 (µs), warm_rate (rows/s), WARM_NOTES
warm_runs() {
    local run out p50 p99 n timeouts w s
    warm_idle50=(); warm_idle99=(); warm_busy50=(); warm_busy99=(); warm_rate=(); WARM_NOTES=()
    warm_setup
    for run in $(seq "$RUNS"); do
        delivered
        read -r p50 p99 n timeouts <<<"$(warm_probe $((-500000000 - 2000000 * (2 * run - 1))))"
        warm_idle50+=("$p50"); warm_idle99+=("$p99")
        [ "$timeouts" = 0 ] || WARM_NOTES+=("run $run: $timeouts probes without long work timed out")

        "${PSQL[@]}" -c "SELECT wtcache.warm('bw_items')" >/dev/null &
        w=$!
        BG_PIDS+=("$w")
        warm_wait delivering
        read -r p50 p99 n timeouts <<<"$(warm_probe $((-500000000 - 2000000 * 2 * run)))"
        s=$(warm_state)
        wait "$w"
        warm_busy50+=("$p50"); warm_busy99+=("$p99")
        [ "$timeouts" = 0 ] || WARM_NOTES+=("run $run: $timeouts probes during the warm timed out")
        [ "${s%% *}" = delivering ] \
            || WARM_NOTES+=("run $run: the warm ended before the probe did (raise BENCH_WARM_ROWS)")
        warm_wait gone
        warm_rate+=("$("${PSQL[@]}" -Atc "SELECT round(rate) FROM wtcache.progress_finished
                        WHERE operation = 'warm' AND table_name = 'bw_items'::regclass
                        ORDER BY finished_at DESC LIMIT 1")")
        echo "run $run: live change lag p50/p99 ${warm_idle50[-1]}/${warm_idle99[-1]} us alone," \
             "${p50}/${p99} us during a warm of $WARM_ROWS rows (at ${s:-its end}), warm ${warm_rate[-1]} rows/s"
    done
    "${PSQL[@]}" >/dev/null <<'SQL'
SELECT FROM wtcache.unwatch('bw_items');
DROP TABLE bw_items;
SQL
    delivered
}

warm_lines() {
    local i50 i99 b50 b99
    i50=$(median "${warm_idle50[@]}"); i99=$(median "${warm_idle99[@]}")
    b50=$(median "${warm_busy50[@]}"); b99=$(median "${warm_busy99[@]}")
    line "live change lag p50, no long work" " us" "${warm_idle50[*]}" "1.00x"
    line "live change lag p50, during a warm of $WARM_ROWS rows" " us" "${warm_busy50[*]}" "$(ratio "$b50" "$i50")"
    line "live change lag p99, no long work" " us" "${warm_idle99[*]}" "1.00x"
    line "live change lag p99, during the warm" " us" "${warm_busy99[*]}" "$(ratio "$b99" "$i99")" "< 10000 us"
    line "  the warm delivered (wtcache.progress rate)" "/s" "${warm_rate[*]}" ""
    if [ ${#WARM_NOTES[@]} -gt 0 ]; then
        printf '  %s\n' "${WARM_NOTES[@]}"
    fi
}

warm_goal() {
    local b99
    b99=$(median "${warm_busy99[@]}")
    goal "live change lag p99 during a warm of $WARM_ROWS rows: $b99 us ($(ratio "$b99" "$(median "${warm_idle99[@]}")") of no long work), goal < 10000 us" \
        "$b99 < 10000"
}
