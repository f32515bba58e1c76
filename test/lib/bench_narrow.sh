# The benchmark's narrowed cached queries (sourced by test/bench.sh; alone
# with BENCH_ONLY=narrow): the hit ratio of a per-org wtcache.query() while
# other sessions write.  nb_members holds BENCH_NARROW_ORGS orgs (default
# 50) of 200 members, watched with the template org:{org_id}.  One pgbench
# client updates random members of orgs 2.. at a steady BENCH_NARROW_RATE
# writes a second (default 150, pgbench -R), another those of org 1 once a
# second (so that a stale result could show); meanwhile one pgbench client
# reads org 1 through query() at BENCH_NARROW_READ_RATE reads a second
# (default 100: a hit ratio depends on reads per write, and the issue's
# 1,630 calls met a like share of writes) for BENCH_NARROW_SECONDS
# (default 10), first with the query narrowed to org 1's tag, then with
# the same query written so that it keeps the table tag (org_id + 0 = $1:
# what every query depended on before issue 19), alternated RUNS times.
# Each read first sums org 1's v in the table, then calls query(): a
# cached sum below that is stale (v only grows), and is recorded in
# nb_stale.  The hit ratio is hits / calls from query_stats().  Needs
# PSQL, RUNS, WORK, BG_PIDS, delivered, line, goal, median and stats from
# the caller.

NARROW_ORGS=${BENCH_NARROW_ORGS:-50}
NARROW_RATE=${BENCH_NARROW_RATE:-150}
NARROW_SECONDS=${BENCH_NARROW_SECONDS:-10}
NARROW_READ_RATE=${BENCH_NARROW_READ_RATE:-100}

narrow_setup() {
    "${PSQL[@]}" >/dev/null <<SQL
CREATE TABLE nb_members (id int PRIMARY KEY, org_id int NOT NULL, name text NOT NULL, v bigint NOT NULL DEFAULT 0);
CREATE INDEX ON nb_members (org_id);
INSERT INTO nb_members SELECT o * 1000 + i, o, 'm' || i, 0
  FROM generate_series(1, $NARROW_ORGS) o, generate_series(0, 199) i;
VACUUM ANALYZE nb_members;
CREATE TABLE nb_stale (at timestamptz DEFAULT now(), query text, cached bigint, committed bigint);
SELECT FROM wtcache.watch('nb_members', tags => ARRAY['org:{org_id}']);
CREATE FUNCTION nb_read(sql text) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
  s0 bigint; s bigint;
BEGIN
  SELECT sum(v) INTO s0 FROM nb_members WHERE org_id = 1;
  SELECT (q->>'v')::bigint INTO s FROM wtcache.query(sql, ARRAY['1']) q;
  IF s IS NULL OR s < s0 THEN
    INSERT INTO nb_stale (query, cached, committed) VALUES (sql, s, s0);
  END IF;
END \$\$;
SQL
    printf '%s\n' "\\set o random(2, $NARROW_ORGS)" '\set i random(0, 199)' \
        'UPDATE nb_members SET v = v + 1 WHERE id = :o * 1000 + :i;' >"$WORK/narrow_others.sql"
    printf '%s\n' '\set i random(0, 199)' \
        'UPDATE nb_members SET v = v + 1 WHERE id = 1000 + :i;' >"$WORK/narrow_own.sql"
    echo "SELECT nb_read('SELECT count(*) AS n, sum(v) AS v FROM nb_members WHERE org_id = \$1');" \
        >"$WORK/narrow_read_narrowed.sql"
    echo "SELECT nb_read('SELECT count(*) AS n, sum(v) AS v FROM nb_members WHERE org_id + 0 = \$1');" \
        >"$WORK/narrow_read_table.sql"
}

# calls and hits of cached queries so far
narrow_counts() {
    "${PSQL[@]}" -Atc "SELECT hits + misses + fallbacks + bypasses, hits FROM wtcache.query_stats()" | tr '|' ' '
}

# the hit ratio (percent, one decimal) of reading with script $1 while the
# writers run; also the reads a second, in $WORK/narrow_reads
narrow_phase() {
    local w1 w2 c0 h0 c1 h1
    delivered
    pgbench -n -c 1 -R "$NARROW_RATE" -T $((NARROW_SECONDS + 2)) -f "$WORK/narrow_others.sql" >/dev/null 2>&1 &
    w1=$!
    pgbench -n -c 1 -R 1 -T $((NARROW_SECONDS + 2)) -f "$WORK/narrow_own.sql" >/dev/null 2>&1 &
    w2=$!
    BG_PIDS+=("$w1" "$w2")
    # the writers at their pace before the reads are counted
    sleep 1
    read -r c0 h0 <<<"$(narrow_counts)"
    pgbench -n -c 1 -R "$NARROW_READ_RATE" -T "$NARROW_SECONDS" -f "$1" >/dev/null 2>&1
    read -r c1 h1 <<<"$(narrow_counts)"
    wait "$w1" "$w2" || true
    awk -v c=$((c1 - c0)) -v s="$NARROW_SECONDS" 'BEGIN {printf "%.0f\n", c / s}' >"$WORK/narrow_reads"
    awk -v c=$((c1 - c0)) -v h=$((h1 - h0)) 'BEGIN {printf "%.1f", c ? 100 * h / c : 0}'
}

# fills narrow_hits, table_hits (percent), narrow_rps, table_rps, narrow_stale
narrow_runs() {
    local run
    narrow_hits=(); table_hits=(); narrow_rps=(); table_rps=()
    narrow_setup
    for run in $(seq "$RUNS"); do
        narrow_hits+=("$(narrow_phase "$WORK/narrow_read_narrowed.sql")")
        narrow_rps+=("$(cat "$WORK/narrow_reads")")
        table_hits+=("$(narrow_phase "$WORK/narrow_read_table.sql")")
        table_rps+=("$(cat "$WORK/narrow_reads")")
        echo "run $run: per-org query at $NARROW_RATE writes/s to other orgs: narrowed ${narrow_hits[-1]}% hits" \
             "(${narrow_rps[-1]} reads/s), on the table tag ${table_hits[-1]}% hits (${table_rps[-1]} reads/s)"
    done
    narrow_stale=$("${PSQL[@]}" -Atc "SELECT count(*) FROM nb_stale")
    "${PSQL[@]}" >/dev/null <<'SQL'
SELECT FROM wtcache.unwatch('nb_members');
DROP TABLE nb_members, nb_stale;
DROP FUNCTION nb_read(text);
SQL
}

# a median of values with one decimal (stats rounds to integers)
narrow_median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
        printf "%.1f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

narrow_lines() {
    printf '%-52s %12s %12s %12s %8s %s\n' "per-org query() hit ratio, $NARROW_RATE writes/s elsewhere" \
        "$(narrow_median "${narrow_hits[@]}")%" "$(printf '%s\n' "${narrow_hits[@]}" | sort -g | head -n 1)%" \
        "$(printf '%s\n' "${narrow_hits[@]}" | sort -g | tail -n 1)%" "" ">= 95%"
    printf '%-52s %12s %12s %12s %8s %s\n' "  the same query on the table tag (before issue 19)" \
        "$(narrow_median "${table_hits[@]}")%" "$(printf '%s\n' "${table_hits[@]}" | sort -g | head -n 1)%" \
        "$(printf '%s\n' "${table_hits[@]}" | sort -g | tail -n 1)%" "" ""
    line "  reads of the narrowed query" "/s" "${narrow_rps[*]}" ""
    line "  reads of the table-tag query" "/s" "${table_rps[*]}" ""
    printf '%-52s %12s %12s %12s %8s %s\n' "  stale results, both queries" "$narrow_stale" "" "" "" "0"
}

narrow_goal() {
    local m
    m=$(narrow_median "${narrow_hits[@]}")
    goal "narrowed per-org query: $m% hits at $NARROW_RATE writes/s to other orgs (table tag: $(narrow_median "${table_hits[@]}")%), goal >= 95%" \
        "$m >= 95"
    goal "narrowed per-org query: $narrow_stale stale results, goal 0" "$narrow_stale == 0"
}
