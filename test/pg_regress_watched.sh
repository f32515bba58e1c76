#!/usr/bin/env bash
# PostgreSQL's own regression suite, with every table it creates watched by
# wtcache, compared with the same suite on a server without wtcache.
#
#   bash test/pg_regress_watched.sh        (as root on Debian bookworm)
#
# Not part of test/run_tests.sh: it downloads the postgresql-15 source
# package (a private deb-src list for the machine's own Debian mirror; the
# system's apt configuration is not touched) and takes several minutes.
#
# What it does:
#  1. fetches the source, builds regress.so and contrib/spi's autoinc.so and
#     refint.so with PGXS (PG_SOURCE_DIR=/path/postgresql-15.x skips this
#     download and uses a tree already unpacked);
#  2. WITHOUT: a fresh server without wtcache, the database 'regression'
#     created as pg_regress creates it, `pg_regress --use-existing
#     --schedule=parallel_schedule`;
#  3. WITH (holding $WTCACHE_LOCK, after installing wtcache from this tree
#     when run as root): a fresh server with shared_preload_libraries =
#     'wtcache' and its own Redis; in 'regression', CREATE EXTENSION wtcache
#     and an event trigger that watches each plain, permanent, logged table
#     with a primary key as soon as it is created (or as soon as ALTER TABLE
#     gives it one), silently, recording in wtcache_regress.seen every table
#     it saw and why it did not watch it; the same suite;
#  4. compares each test's output of the two runs (the source may trail the
#     installed server by a minor version: what that changes is in both and
#     cancels out), then waits for delivery and runs wtcache.verify() on the
#     watched tables the suite left, and greps the server log for crashes and
#     for the worker's errors.
#
# Each hunk of the differences is classified (see compare()): the capture
# triggers listed, wtcache's warnings on a key losing its unique index and on
# SET UNLOGGED; anything else is unexplained.
#
# Everything is kept in $WORK (printed at the end): without/ and with/ hold
# each run's results/, regression.diffs and server.log; watched.diffs the
# differences between the runs, unexplained.diffs the hunks of no known
# kind; report.txt the report, ending with a summary.  Exit status 0 when
# every difference is of a kind that must differ and the checks are clean,
# 1 otherwise.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
ROOT=$(dirname "$HERE")
. "$HERE/lib/servers.sh"
export PATH="$(pg_config --bindir):$PATH"

WTCACHE_LOCK=${WTCACHE_LOCK:-/tmp/wtcache-install.lock}
PGBIN=$(pg_config --bindir)
PGREGRESS="$(dirname "$(pg_config --pgxs)")/../test/regress/pg_regress"

# Settings of both servers: what pg_regress's temporary instance sets that
# the tests' output depends on (prepared_xacts), and speed.
COMMON_CONF=(
    "max_prepared_transactions = 2"
    "fsync = off"
    "log_line_prefix = '%m [%p] %b '"
    "log_autovacuum_min_duration = -1"
)

# ------------------------------------------------------------- one run --
# phase NAME WORK SRC LIB: run as the server's user; one server (and, for
# 'with', one Redis), the suite, and for 'with' the checks after it.
phase() {
    local name=$1 work=$2 src=$3 lib=$4
    local dir=$work/$name
    rm -rf "$dir"; mkdir -p "$dir"
    trap servers_stop_all EXIT

    local pgport redis_port conf=("${COMMON_CONF[@]}")
    pgport=$(free_port)
    if [ "$name" = with ]; then
        redis_port=$(free_port)
        while [ "$redis_port" = "$pgport" ]; do redis_port=$(free_port); done
        start_redis "$dir/redis" "$redis_port"
        conf+=("shared_preload_libraries = 'wtcache'"
               "wtcache.redis_url = 'redis://127.0.0.1:$redis_port'")
    fi
    INITDB_ARGS="--encoding=UTF8 --locale=C" start_pg "$dir/pgdata" "$pgport" "${conf[@]}"
    local psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$dir/pgdata" -p "$pgport" -U postgres)

    # pg_regress --use-existing neither creates nor drops the database:
    # create it as pg_regress's create_database() does.
    "${psql[@]}" -d postgres <<'SQL'
CREATE DATABASE regression TEMPLATE=template0;
ALTER DATABASE regression SET lc_messages TO 'C';
ALTER DATABASE regression SET lc_monetary TO 'C';
ALTER DATABASE regression SET lc_numeric TO 'C';
ALTER DATABASE regression SET lc_time TO 'C';
ALTER DATABASE regression SET bytea_output TO 'hex';
ALTER DATABASE regression SET timezone_abbreviations TO 'Default';
SQL

    if [ "$name" = with ]; then
        "${psql[@]}" -d regression <<'SQL'
CREATE EXTENSION wtcache;
CREATE SCHEMA wtcache_regress;
-- Every table the event trigger saw being created (or given a primary key),
-- and whether it is watched or why not.
CREATE TABLE wtcache_regress.seen (
    relid   oid,
    name    text,
    command text,
    watched boolean,
    reason  text,
    at      timestamptz DEFAULT clock_timestamp());

GRANT USAGE ON SCHEMA wtcache_regress TO PUBLIC;
GRANT INSERT ON wtcache_regress.seen TO PUBLIC;

-- Watches each new table it can; never changes what the statement does or
-- prints: its own messages are kept from the client (the function-level SET
-- is undone when it returns) and watch()'s errors are caught and recorded.
-- It runs as the role that ran the DDL, the table's owner, as a DBA's own
-- watch() would (not SECURITY DEFINER: opr_sanity lists those).  It reads
-- only catalogs: a read of wtcache.watched would show up in the locks that
-- alter_table lists.
CREATE FUNCTION wtcache_regress.watch_new() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = error
AS $fn$
DECLARE
    c       record;
    why     text;
    has_pk  boolean;
BEGIN
    FOR c IN
        SELECT DISTINCT d.objid, d.object_identity, d.command_tag,
               r.relkind, r.relpersistence
        FROM pg_event_trigger_ddl_commands() d
        JOIN pg_class r ON r.oid = d.objid
        WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
          AND r.relkind IN ('r', 'p')
    LOOP
        -- already watched: it has wtcache's capture trigger
        IF EXISTS (SELECT 1 FROM pg_trigger t
                   WHERE t.tgrelid = c.objid AND t.tgname = 'wtcache_capture_ins') THEN
            CONTINUE;
        END IF;
        has_pk := EXISTS (SELECT 1 FROM pg_index i
                          WHERE i.indrelid = c.objid AND i.indisprimary);
        -- ALTER TABLE: only when it left an unwatched table with a key
        IF c.command_tag = 'ALTER TABLE' AND NOT has_pk THEN
            CONTINUE;
        END IF;
        why := CASE
            WHEN c.relpersistence = 't' THEN 'temporary'
            WHEN c.relpersistence = 'u' THEN 'unlogged'
            WHEN c.relkind = 'p' THEN 'partitioned'
            WHEN NOT has_pk THEN 'no primary key'
        END;
        IF why IS NULL THEN
            BEGIN
                -- rows a CREATE TABLE AS or an ALTER TABLE found are pushed
                PERFORM wtcache.watch(c.objid::regclass,
                                      warm => c.command_tag <> 'CREATE TABLE');
            EXCEPTION WHEN OTHERS THEN
                why := 'error ' || SQLSTATE || ': ' || SQLERRM;
            END;
        END IF;
        BEGIN
            INSERT INTO wtcache_regress.seen (relid, name, command, watched, reason)
            VALUES (c.objid, c.object_identity, c.command_tag, why IS NULL, why);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    -- never let the suite's statement fail because of this trigger; but
    -- say so (the report counts these)
    BEGIN
        INSERT INTO wtcache_regress.seen (name, command, watched, reason)
        VALUES (NULL, NULL, false, 'event trigger failed ' || SQLSTATE || ': ' || SQLERRM);
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
END
$fn$;
CREATE EVENT TRIGGER wtcache_regress_watch_new ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
    EXECUTE FUNCTION wtcache_regress.watch_new();
SQL
        # Delivery running while the suite runs: wait for the worker.
        local connected=f
        for _ in $(seq 600); do
            connected=$("${psql[@]}" -d regression -Atc \
                "SELECT coalesce(bool_or(connected), false) FROM wtcache.worker_status()
                  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = 'regression')")
            [ "$connected" = t ] && break
            sleep 0.1
        done
        [ "$connected" = t ] || { echo "the wtcache worker did not connect to Redis"; return 1; }
    fi

    echo "== $name: running the parallel schedule (port $pgport)"
    local rc=0
    (cd "$dir" && timeout 3600 "$PGREGRESS" --use-existing --host="$dir/pgdata" \
        --port="$pgport" --user=postgres --inputdir="$src/src/test/regress" \
        --outputdir="$dir" --bindir="$PGBIN" --dlpath="$lib" \
        --schedule="$src/src/test/regress/parallel_schedule" >"$dir/pg_regress.out" 2>&1) || rc=$?
    echo "pg_regress exit status $rc" >> "$dir/pg_regress.out"
    grep -E "^(#|=| *[0-9]+ of)|failed|FAILED" "$dir/pg_regress.out" | tail -n 5

    if [ "$name" = with ]; then
        checks "$dir" "${psql[@]}" > "$dir/checks.txt" 2>&1 || true
    fi
    servers_stop_all
    trap - EXIT
}

# checks DIR PSQL...: after the WITH run, delivery and Redis against the
# watched tables the suite left.
checks() {
    local dir=$1; shift
    local psql=("$@" -d regression)
    echo "-- tables the event trigger saw, by outcome"
    "${psql[@]}" -c "SELECT coalesce(reason, 'watched') AS outcome, count(*)
                      FROM wtcache_regress.seen GROUP BY 1 ORDER BY 2 DESC"
    echo "-- errors of watch() and of the event trigger (first 20)"
    "${psql[@]}" -c "SELECT name, command, reason FROM wtcache_regress.seen
                      WHERE reason LIKE 'error%' OR reason LIKE 'event trigger failed%'
                      ORDER BY at LIMIT 20"
    echo "-- tables watched by the event trigger: $("${psql[@]}" -Atc "SELECT count(*) FROM wtcache_regress.seen WHERE watched")"
    echo "-- watched tables left: $("${psql[@]}" -Atc 'SELECT count(*) FROM wtcache.watched')"
    echo "-- wtcache.wait('120s'): $("${psql[@]}" -Atc "SELECT wtcache.wait('120 seconds')")"
    echo "-- tables with pending, set-aside or failed changes"
    "${psql[@]}" -c "SELECT table_name, pending, set_aside, set_aside_reason, errors, last_error
                      FROM wtcache.status
                      WHERE pending > 0 OR set_aside > 0 OR errors > 0 ORDER BY 1"
    echo "-- the worker"
    "${psql[@]}" -c "SELECT state, connected, last_error, last_error_at, pushed, batches, resyncs
                      FROM wtcache.worker_status()"
    echo "-- verify() of every watched table: problems found"
    "${psql[@]}" <<'SQL'
SET client_min_messages = warning;
CREATE TEMP TABLE verify_out (rel regclass, problem text, n bigint, sample text);
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT rel FROM wtcache.watched ORDER BY rel::text LOOP
        BEGIN
            INSERT INTO verify_out
            SELECT t, v.problem, count(*), min(v.redis_key)
            FROM wtcache.verify(t) v GROUP BY v.problem;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO verify_out VALUES (t, 'verify() failed: ' || SQLERRM, 1, NULL);
        END;
    END LOOP;
END $$;
SELECT count(*) AS tables_verified FROM wtcache.watched;
SELECT * FROM verify_out ORDER BY rel::text, problem;
SELECT count(*) AS verify_problems FROM verify_out \gset
\echo verify problems: :verify_problems
SQL
    local log=$dir/pgdata/server.log bad=()
    echo "-- server log: crashes"
    if grep -E "terminated by signal|PANIC|was terminated|reinitializing|TRAP:" "$log"; then
        bad+=(crash)
    else
        echo "(none)"
    fi
    echo "-- server log: the launcher's and worker's WARNING/ERROR/FATAL lines"
    if grep -E "wtcache (worker|launcher) (WARNING|ERROR|FATAL)" "$log"; then
        bad+=(worker-errors)
    else
        echo "(none)"
    fi
    echo "-- server log: changes the worker set aside (it goes on with other tables)"
    grep -E "wtcache worker LOG: .*set aside" "$log" || echo "(none)"
    echo "-- server log: other lines that name wtcache at WARNING or above (first 40)"
    grep -E "(WARNING|ERROR|FATAL|PANIC): .*(wtcache|the key of watched table)" "$log" | grep -vE "wtcache (worker|launcher) " \
        | head -n 40 || true
    [ "$("${psql[@]}" -Atc "SELECT count(*) FROM wtcache_regress.seen
                             WHERE reason LIKE 'error%' OR reason LIKE 'event trigger failed%'")" = 0 ] \
        || bad+=(watch-errors)
    [ "$("${psql[@]}" -Atc "SELECT wtcache.wait('10 seconds')")" = t ] || bad+=(wait-false)
    [ "$("${psql[@]}" -Atc "SELECT count(*) FROM wtcache.status
                             WHERE pending > 0 OR set_aside > 0 OR errors > 0")" = 0 ] || bad+=(undelivered)
    grep -q "^verify problems: 0$" "$dir/checks.txt" || bad+=(verify)
    echo "== checks: ${bad[*]:-clean}"
    [ ${#bad[@]} -eq 0 ]
}

# ---------------------------------------------------------- the source --
fetch_source() {
    local dest=$1 apt=$1/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dest/dl"
    # deb-src lines for the mirrors the machine already uses
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] && sed -nE 's/^deb[[:space:]]+/deb-src /p' "$f"
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] && awk '
                function flush(   nu, ns, u, s, i, j) {
                    if (deb) {
                        nu = split(uris, u, " "); ns = split(suites, s, " ")
                        for (i = 1; i <= nu; i++)
                            for (j = 1; j <= ns; j++)
                                print "deb-src " u[i] " " s[j] " " comps
                    }
                    deb = 0; uris = suites = comps = ""
                }
                /^[[:space:]]*$/ { flush(); next }
                /^Types:/ { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
                /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
                /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
                /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
                END { flush() }' "$f"
        done
    } > "$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
                -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
    echo "== fetching the postgresql-15 source package (deb-src of: $(awk '{print $2}' "$apt/sources.list" | sort -u | tr '\n' ' '))"
    apt-get "${opts[@]}" update -qq >/dev/null
    local v
    for v in $(apt-cache "${opts[@]}" showsrc postgresql-15 | awk '/^Version:/ {print $2}' | sort -rV -u); do
        if (cd "$dest/dl" && apt-get "${opts[@]}" source --download-only -qq "postgresql-15=$v" >/dev/null 2>&1); then
            echo "   postgresql-15 $v (the server is $(pg_config --version))"
            tar -C "$dest" -xf "$dest/dl/postgresql-15_${v%%-*}.orig.tar.bz2"
            SRC="$dest/postgresql-${v%%-*}"
            return 0
        fi
        echo "   postgresql-15 $v listed but not downloadable"
    done
    echo "cannot fetch the postgresql-15 source package"
    return 1
}

build_libs() {
    local src=$1 lib=$2
    mkdir -p "$lib"
    cp "$src/src/test/regress/regress.c" "$src/contrib/spi/autoinc.c" \
       "$src/contrib/spi/refint.c" "$lib/"
    printf 'MODULES = regress autoinc refint\nPG_CONFIG = pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' \
        > "$lib/Makefile"
    make -C "$lib" with_llvm=no >/dev/null
}

# ------------------------------------------------------------ compare --
# What must differ, by kind: each hunk of the diff is explained when, once
# the added lines of these kinds are left out, its other lines are the
# same on both sides but for alignment and row counts (psql widens a
# column for the longer names).
#   listing:  \d's "Triggers firing always" and pg_trigger rows show the
#             capture triggers (ENABLE ALWAYS); sql_drop/ddl_command_end
#             event triggers see them created and dropped; pg_event_trigger
#             lists wtcache_sql_drop and this check's own trigger;
#   key:      wtcache's WARNING when the key of a watched table loses its
#             unique index (the DBA must act: two rows may share a key);
#   unlogged: wtcache's WARNING when SET UNLOGGED ends a watch (its keys
#             are removed from Redis: crash recovery would empty the table).
CLASSIFY_PY='
import re, sys
diffs, unexplained = sys.argv[1], sys.argv[2]
KINDS = [
    ("key", re.compile(r"^(WARNING:  the key of watched table .* is no longer enforced by a unique index"
                       r"|DETAIL:  wtcache names rows in Redis by their key"
                       r"|HINT:  Create a unique index on the key columns again)")),
    ("unlogged", re.compile(r"^(WARNING:  wtcache: table .* is no longer watched: it is unlogged now"
                            r"|DETAIL:  Crash recovery empties an unlogged table"
                            r"|HINT:  ALTER TABLE \.\.\. SET LOGGED, then call wtcache\.watch\(\) again)")),
    ("listing", re.compile(r"^Triggers firing always:$"
                           r"|\bwtcache_(capture_(ins|upd|del)|truncate|sql_drop|regress_watch_new)\b")),
]
def norm(lines):
    out = []
    for l in lines:
        l = " ".join(l.split())
        if re.fullmatch(r"[-+ ]*", l) or re.fullmatch(r"\(\d+ rows?\)", l):
            continue
        out.append(l)
    return sorted(out)
hunks, f = [], None
for line in open(diffs):
    if line.startswith("--- "):
        f = line.split()[1].rsplit("/", 1)[-1][:-4]
    elif line.startswith("+++ "):
        pass
    elif line.startswith("@@"):
        hunks.append((f, [line]))
    elif hunks:
        hunks[-1][1].append(line)
counts, tests, bad = {}, {}, []
for f, lines in hunks:
    minus = [l[1:].rstrip("\n") for l in lines[1:] if l.startswith("-")]
    plus = [l[1:].rstrip("\n") for l in lines[1:] if l.startswith("+")]
    kinds, rest = set(), []
    for l in plus:
        k = next((k for k, r in KINDS if r.search(l)), None)
        if k:
            kinds.add(k)
        else:
            rest.append(l)
    if not kinds or norm(minus) != norm(rest):
        kinds = {"UNEXPLAINED"}
        bad.append((f, lines))
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
        tests.setdefault(k, set()).add(f)
with open(unexplained, "w") as out:
    for f, lines in bad:
        out.write("--- " + f + "\n" + "".join(lines))
print("-- differing hunks by kind (%d hunks):" % len(hunks))
for k in ["listing", "key", "unlogged", "UNEXPLAINED"]:
    if k in counts:
        print("   %-11s %3d hunks in %s" % (k, counts[k], " ".join(sorted(tests[k]))))
print("unexplained hunks: %d" % len(bad))
'

compare() {
    local work=$1
    local out=$work/watched.diffs
    : > "$out"
    local t differ=()
    for t in $( (ls "$work/without/results"; ls "$work/with/results") 2>/dev/null | sort -u); do
        if ! cmp -s "$work/without/results/$t" "$work/with/results/$t"; then
            differ+=("${t%.out}")
            diff -u "$work/without/results/$t" "$work/with/results/$t" >> "$out" || true
        fi
    done
    echo "-- pg_regress, without wtcache: $(grep -E 'tests (passed|failed)|of .* tests' "$work/without/pg_regress.out" | tr -d '=' | xargs)"
    echo "-- pg_regress, with wtcache:    $(grep -E 'tests (passed|failed)|of .* tests' "$work/with/pg_regress.out" | tr -d '=' | xargs)"
    echo "-- tests whose output differs between the runs (${#differ[@]}): ${differ[*]:-none}"
    echo "   (diff -u without with: $out; hunks of no known kind: $work/unexplained.diffs)"
    python3 -c "$CLASSIFY_PY" "$out" "$work/unexplained.diffs"
}

# --------------------------------------------------------------- main --
if [ "${1:-}" = --phase ]; then
    shift
    phase "$@"
    exit $?
fi

WORK=${WORK:-$(mktemp -d /tmp/wtcache-pgregress.XXXXXX)}
mkdir -p "$WORK"
SRC=${PG_SOURCE_DIR:-}
if [ -z "$SRC" ]; then
    fetch_source "$WORK"
fi
[ -f "$SRC/src/test/regress/parallel_schedule" ] || { echo "no regression suite in $SRC"; exit 1; }
build_libs "$SRC" "$WORK/lib"

as_server_user() {
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$WORK"
        chmod -R a+rX "$WORK" "$SRC"
        runuser -u postgres -- bash "$SELF" --phase "$@"
    else
        bash "$SELF" --phase "$@"
    fi
}

rc=0
as_server_user without "$WORK" "$SRC" "$WORK/lib" || rc=1
{
    # The installed extension is shared by everyone on the machine: hold the
    # lock while installing this tree's and for the whole WITH run.
    flock 9
    if [ "$(id -u)" -eq 0 ]; then
        echo "== installing wtcache from $ROOT"
        make -C "$ROOT" with_llvm=no >/dev/null
        make -C "$ROOT" with_llvm=no install >/dev/null
    fi
    # the servers started in the run must not inherit the lock
    as_server_user with "$WORK" "$SRC" "$WORK/lib" 9>&- || rc=1
} 9>"$WTCACHE_LOCK"

compare "$WORK" > "$WORK/report.txt" || rc=1
cat "$WORK/with/checks.txt" >> "$WORK/report.txt" 2>/dev/null || echo "no checks: the WITH run failed" >> "$WORK/report.txt"
unexplained=$(sed -n 's/^unexplained hunks: //p' "$WORK/report.txt")
checks=$(sed -n 's/^== checks: //p' "$WORK/report.txt")
[ "$unexplained" = 0 ] || rc=1
[ "$checks" = clean ] || rc=1
{
    echo
    echo "== summary"
    echo "   source $(basename "$SRC"), server $(pg_config --version)"
    sed -n 's/^-- pg_regress, /   pg_regress, /p' "$WORK/report.txt"
    echo "   tables the event trigger watched: $(sed -n 's/^-- tables watched by the event trigger: //p' "$WORK/report.txt");" \
         "left at the end and verified: $(sed -n 's/^-- watched tables left: //p' "$WORK/report.txt")"
    sed -n 's/^-- tests whose output differs between the runs (\([0-9]*\)).*/   tests whose output differs: \1/p' "$WORK/report.txt"
    sed -n '/^-- differing hunks by kind/,/^unexplained hunks/p' "$WORK/report.txt" | sed '1d;$d'
    echo "   hunks of no known kind: ${unexplained:-?} (see $WORK/unexplained.diffs)"
    echo "   tables whose changes the worker set aside (reads of their changed keys read the table):" \
         "$(grep -oE 'wtcache worker LOG: +wtcache: changes of [^ ]+ set aside' "$WORK/with/pgdata/server.log" 2>/dev/null \
            | awk '{print $(NF-2)}' | sort -u | xargs | sed 's/^$/none/')"
    echo "   checks after the run (crashes, worker errors, watch() errors, wait(), pending, verify()): ${checks:-not run}"
    if [ $rc -eq 0 ]; then
        echo "== PASS: every difference is of a kind that must differ, and the checks are clean"
    else
        echo "== FAIL: see above"
    fi
} >> "$WORK/report.txt"
cat "$WORK/report.txt"
echo "== kept in $WORK (report.txt, watched.diffs, unexplained.diffs, without/, with/)"
exit $rc
