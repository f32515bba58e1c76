# The benchmark's capture cost on a partitioned table (sourced by
# test/bench.sh, right after the unpartitioned capture runs, so that the
# two ratios come from one run): the UPDATE of every row of bench_parted,
# pgbench_accounts' rows copied into BENCH_PARTITIONS hash partitions on
# aid (default 10; the primary key, aid, is the partition key), watched by
# wtcache.watch() of the parent and unwatched, as the unpartitioned runs
# do it (the parent's capture trigger disabled, which disables its clone
# on every partition); then the drain of the watched UPDATE, which the
# worker reads through the parent.  The table is unwatched, its keys
# purged, and dropped after, so the sections that follow see what they
# saw without it.  Needs timed_update, delivered, PSQL, RUNS, ROWS and
# WORK from the caller.

PARTITIONS=${BENCH_PARTITIONS:-10}

# fills parted_plain, parted_watched (ms) and parted_drain (changes/s)
partitioned_capture_runs() {
    local run i ms
    {
        echo "CREATE TABLE bench_parted (LIKE pgbench_accounts) PARTITION BY HASH (aid);"
        for i in $(seq 0 $((PARTITIONS - 1))); do
            echo "CREATE TABLE bench_parted_$i PARTITION OF bench_parted
                    FOR VALUES WITH (MODULUS $PARTITIONS, REMAINDER $i);"
        done
        # the rows first, then the primary key (one index build a
        # partition), and VACUUM for the hint bits and visibility map, as
        # pgbench -i leaves pgbench_accounts
        echo "INSERT INTO bench_parted SELECT * FROM pgbench_accounts;"
        echo "ALTER TABLE bench_parted ADD PRIMARY KEY (aid);"
        echo "VACUUM ANALYZE bench_parted;"
        # watch() without warm queues no row
        echo "SELECT FROM wtcache.watch('bench_parted');"
        echo "ALTER TABLE bench_parted DISABLE TRIGGER wtcache_capture_upd;"
    } | "${PSQL[@]}" >/dev/null
    # the unwatched runs are so only if the parent's DISABLE reached every
    # partition's clone of the trigger
    i=$("${PSQL[@]}" -Atc "SELECT count(*) FROM pg_trigger t JOIN pg_inherits i ON i.inhrelid = t.tgrelid
                            WHERE i.inhparent = 'bench_parted'::regclass
                              AND t.tgname = 'wtcache_capture_upd' AND t.tgenabled = 'D'")
    [ "$i" = "$PARTITIONS" ] \
        || { echo "bench: $i of the $PARTITIONS partitions have their capture trigger disabled" >&2; exit 1; }
    # wait() answers false at once while a watched table is held, as
    # pgbench_accounts is with its capture trigger disabled: enabled for
    # this section (its requeue delivered first), disabled again after
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts ENABLE TRIGGER wtcache_capture_upd"
    delivered
    parted_plain=(); parted_watched=(); parted_drain=()
    for run in $(seq "$RUNS"); do
        parted_plain+=("$(timed_update bench_parted)")

        "${PSQL[@]}" -c "ALTER TABLE bench_parted ENABLE TRIGGER wtcache_capture_upd"
        # as for pgbench_accounts: the requeue of the tree delivered first
        delivered
        parted_watched+=("$(timed_update bench_parted)")
        ms=$("${PSQL[@]}" -c '\timing on' -c "SELECT wtcache.wait('600s')" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        parted_drain+=("$(awk -v r="$ROWS" -v ms="$ms" 'BEGIN {printf "%.0f", r / (ms / 1000)}')")
        "${PSQL[@]}" -c "ALTER TABLE bench_parted DISABLE TRIGGER wtcache_capture_upd"
        echo "run $run, $PARTITIONS hash partitions: plain ${parted_plain[-1]} ms," \
             "wtcache ${parted_watched[-1]} ms (drain ${parted_drain[-1]}/s)"
    done
    "${PSQL[@]}" -c "ALTER TABLE pgbench_accounts DISABLE TRIGGER wtcache_capture_upd"
}

# bench_parted unwatched, its keys gone from Redis, and dropped
partitioned_drop() {
    "${PSQL[@]}" -c "SET client_min_messages = warning" \
        -c "SELECT FROM wtcache.unwatch('bench_parted')" >/dev/null
    delivered
    "${PSQL[@]}" -c "DROP TABLE bench_parted"
}

# the table's lines for the partitioned runs, under the unpartitioned ones
partitioned_capture_lines() {
    line "UPDATE of every row, $PARTITIONS hash partitions, unwatched" " ms" "${parted_plain[*]}" "1.00x"
    line "  watched by wtcache" " ms" "${parted_watched[*]}" \
        "$(ratio "$(median "${parted_watched[@]}")" "$(median "${parted_plain[@]}")")" \
        "(unpartitioned $(ratio "$(median "${watched[@]}")" "$(median "${plain[@]}")"))"
}
partitioned_drain_line() {
    line "drain of the UPDATE, $PARTITIONS hash partitions" "/s" "${parted_drain[*]}" \
        "$(ratio "$(median "${parted_drain[@]}")" "$(median "${drain[@]}")")" "(next to unpartitioned)"
}
