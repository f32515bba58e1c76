# How the write load's cost compares and grows (sourced by test/bench.sh,
# after the lag section: wal_level is logical here, for every figure of
# this file, so each is set next to the unwatched one measured with it).
# Needs write_tps, pgbench_write_tps, start_decoder, stop_decoder, capture_with, delivered,
# client, worker_pid, worker_ticks, PSQL, RUNS, ROWS and WORK from the
# caller.

# pgbench -N beside the logical decoding peer (pg_recvlogical feeding its
# consumer into Redis, all on the same cores), next to wtcache and to
# neither, with synchronous_commit on and off.  Fills ld_{on,off}_{plain,
# wtc,peer}.
peer_write_runs() {
    local run
    ld_on_plain=(); ld_on_wtc=(); ld_on_peer=(); ld_off_plain=(); ld_off_wtc=(); ld_off_peer=()
    export WORKER_US_TAG=.logical
    for run in $(seq "$RUNS"); do
        touch_every_page
        ld_on_plain+=("$(write_tps on none)")
        ld_on_wtc+=("$(write_tps on wtcache_capture_upd)")
        ld_on_peer+=("$(write_tps on ld)")
        ld_off_plain+=("$(write_tps off none)")
        ld_off_wtc+=("$(write_tps off wtcache_capture_upd)")
        ld_off_peer+=("$(write_tps off ld)")
        echo "run $run, wal_level logical: pgbench -N TPS, synchronous_commit on: unwatched ${ld_on_plain[-1]}," \
             "wtcache ${ld_on_wtc[-1]}, logical decoding ${ld_on_peer[-1]}; off: unwatched ${ld_off_plain[-1]}," \
             "wtcache ${ld_off_wtc[-1]}, logical decoding ${ld_off_peer[-1]}"
    done
    unset WORKER_US_TAG
}

# TPS ratio and lag as the clients grow: pgbench -N with 1, 2, 4 and 8
# clients (synchronous_commit on, BENCH_SCALE_SECONDS a run, default 10),
# unwatched, then watched with the lag probe of the lag section running
# beside it (100 probes a second, which the unwatched runs do not carry).
# Fills scale_plain_<c>, scale_wtc_<c>, scale_p50_<c>, scale_p99_<c>.
SCALE_CLIENTS=(1 2 4 8)
client_scaling_runs() {
    local run c probe tps seconds=${BENCH_SCALE_SECONDS:-10} base=-500000000 lagout
    [ "$seconds" -ge 3 ] || seconds=3
    for c in "${SCALE_CLIENTS[@]}"; do
        eval "scale_plain_$c=(); scale_wtc_$c=(); scale_p50_$c=(); scale_p99_$c=()"
    done
    for run in $(seq "$RUNS"); do
        touch_every_page
        for c in "${SCALE_CLIENTS[@]}"; do
            capture_with none
            quiesce
            tps=$(pgbench_write_tps on "$c" "$seconds")
            eval "scale_plain_$c+=($tps)"
            capture_with wtcache_capture_upd
            quiesce
            base=$((base - 1000000))
            client lag --target wtcache --rate 100 --seconds "$((seconds - 1))" --base "$base" \
                >"$WORK/scale_lag.out" &
            probe=$!
            BG_PIDS+=("$probe")
            tps=$(pgbench_write_tps on "$c" "$seconds")
            eval "scale_wtc_$c+=($tps)"
            wait "$probe"
            unset 'BG_PIDS[-1]'
            read -r -a lagout <"$WORK/scale_lag.out"
            eval "scale_p50_$c+=(${lagout[0]:-0}); scale_p99_$c+=(${lagout[1]:-0})"
        done
        echo "run $run: pgbench -N TPS unwatched / wtcache (lag p50/p99 us) by clients:" \
             "$(for c in "${SCALE_CLIENTS[@]}"; do
                    eval "echo -n \"$c: \${scale_plain_$c[-1]} / \${scale_wtc_$c[-1]} (\${scale_p50_$c[-1]}/\${scale_p99_$c[-1]}); \""
                done)"
    done
}

# Ten databases, each with its own pgbench tables (scale 1) watched, each
# written by its own pgbench -N client at once (synchronous_commit on,
# WRITE_SECONDS): total TPS unwatched and watched, the ten workers' CPU
# per change, and their memory: private (anonymous) resident memory of
# the largest, and of all ten, after the run and once they were idle for a
# poll interval.  Fills dbs_plain, dbs_wtc, dbs_us, dbs_rss_{max,sum}_kb,
# dbs_idle_{max,sum}_kb.
DB_COUNT=10
dbs_write() {
    local d pids=() out tps=0
    for d in $(seq "$DB_COUNT"); do
        PGOPTIONS="-c synchronous_commit=on" PGDATABASE=bench_db$d \
            pgbench -n -N -c 1 -j 1 -T "$WRITE_SECONDS" >"$WORK/dbs_$d.out" 2>&1 &
        pids+=($!)
    done
    for d in $(seq "$DB_COUNT"); do
        if ! wait "${pids[$((d - 1))]}"; then
            cat "$WORK/dbs_$d.out" >&2
            return 1
        fi
        out=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/dbs_$d.out")
        tps=$(awk -v a="$tps" -v b="$out" 'BEGIN {printf "%.0f", a + b}')
    done
    echo "$tps"
}
dbs_trigger() {
    local d
    for d in $(seq "$DB_COUNT"); do
        PGDATABASE=bench_db$d "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts $1 TRIGGER wtcache_capture_upd"
    done
}
dbs_delivered() {
    local d
    for d in $(seq "$DB_COUNT"); do PGDATABASE=bench_db$d delivered; done
}
# one line per worker of the ten databases: pid, CPU ticks, changes pushed
dbs_workers() {
    "${PSQL[@]}" -Atc "SELECT s.pid, s.pushed FROM wtcache.worker_status() s
                         JOIN pg_database d ON d.oid = s.database_oid
                        WHERE d.datname LIKE 'bench\_db%' AND s.pid IS NOT NULL ORDER BY s.pid" \
        | while IFS='|' read -r pid pushed; do echo "$pid $(worker_ticks "$pid") $pushed"; done
}
# the largest and the sum of the private (anonymous) resident memory of the
# workers listed in $1 (dbs_workers lines)
workers_private_kb() {
    local pid
    while read -r pid _; do
        awk '/^RssAnon:/ {print $2}' "/proc/$pid/status"
    done <<<"$1" | awk '{s += $1; if ($1 > m) m = $1} END {print m, s}'
}
databases_runs() {
    local d run before after max sum imax isum
    dbs_plain=(); dbs_wtc=(); dbs_us=(); dbs_rss_max_kb=(); dbs_rss_sum_kb=(); dbs_idle_max_kb=(); dbs_idle_sum_kb=()
    for d in $(seq "$DB_COUNT"); do
        "${PSQL[@]}" -c "CREATE DATABASE bench_db$d"
        PGDATABASE=bench_db$d pgbench -i -q -s 1 >/dev/null 2>&1
        PGDATABASE=bench_db$d "${PSQL[@]}" -c "CREATE EXTENSION wtcache" \
            -c "SELECT FROM wtcache.watch('pgbench_accounts')" >/dev/null
    done
    dbs_delivered
    for run in $(seq "$RUNS"); do
        dbs_trigger DISABLE
        dbs_plain+=("$(dbs_write)")
        dbs_trigger ENABLE
        dbs_delivered
        before=$(dbs_workers)
        [ "$(wc -l <<<"$before")" = "$DB_COUNT" ] \
            || { echo "bench: expected $DB_COUNT workers for the bench databases, found: $before" >&2; exit 1; }
        dbs_wtc+=("$(dbs_write)")
        dbs_delivered
        after=$(dbs_workers)
        dbs_us+=("$(awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {t[$1] = $2; n[$1] = $3; next}
                        ($1 in t) {dt += $2 - t[$1]; dn += $3 - n[$1]}
                        END {printf "%.1f", (dn > 0 ? dt * 1000000 / hz / dn : 0)}' \
                    <(echo "$before") <(echo "$after"))")
        read -r max sum <<<"$(workers_private_kb "$after")"
        dbs_rss_max_kb+=("$max"); dbs_rss_sum_kb+=("$sum")
        # idle for a poll interval, a worker gives back its batches' memory
        sleep "$(( $("${PSQL[@]}" -Atc "SELECT setting FROM pg_settings WHERE name = 'wtcache.poll_interval'") / 1000 + 2 ))"
        read -r imax isum <<<"$(workers_private_kb "$after")"
        dbs_idle_max_kb+=("$imax"); dbs_idle_sum_kb+=("$isum")
        echo "run $run: $DB_COUNT databases, one pgbench -N client each: TPS unwatched ${dbs_plain[-1]}," \
             "wtcache ${dbs_wtc[-1]}; workers ${dbs_us[-1]} us CPU a change, private memory" \
             "largest ${max} kB, all ${sum} kB; idle: largest ${imax} kB, all ${isum} kB"
    done
}
