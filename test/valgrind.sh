#!/usr/bin/env bash
# Memory checks of wtcache's C code under valgrind memcheck.
#
#   bash test/valgrind.sh      (root: builds, installs, runs as postgres)
#
# Starts a PostgreSQL whose every process runs under valgrind, runs the
# pg_regress suite against it (Redis out of reach, as in the suite), then a
# workload that goes through Redis (delivery, cached reads, cached queries
# and their fills, tags, invalidate(), verify(), resync), and fails if any
# valgrind error has a wtcache frame among its first frames.  Errors that
# are PostgreSQL's own (the padding bytes it writes to the relcache init
# file and to WAL) do not count.  Leaks across transactions are checked by
# test/t/016_memory.pl, which valgrind cannot see inside memory contexts.
set -euo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
. "$HERE/lib/servers.sh"
if [ "$(id -u)" -eq 0 ]; then
    install_packages valgrind
    # the run as postgres gets a copy of test/ only: the regression files too
    WTCACHE_REGRESS_DIR=$(mktemp -d /tmp/wtcache-regress.XXXXXX)
    cp -r "$(dirname "$HERE")/sql" "$(dirname "$HERE")/expected" "$WTCACHE_REGRESS_DIR/"
    chmod -R a+rX "$WTCACHE_REGRESS_DIR"
    export WTCACHE_REGRESS_DIR
    trap 'rm -rf "$WTCACHE_REGRESS_DIR"' EXIT
    run_as_postgres_after_install "$SELF" "$(dirname "$HERE")" "$@"
fi
export PATH="$(pg_config --bindir):$PATH"
ROOT=$(dirname "$HERE")
REGRESS_DIR=${WTCACHE_REGRESS_DIR:-$ROOT}
WORK=$(mktemp -d /tmp/wtcache-valgrind.XXXXXX)
PG="$WORK/pg"
PGPORT=$(free_port)
RPORT=$(free_port)
trap 'pg_ctl -D "$PG" -m immediate stop >/dev/null 2>&1 || true; servers_stop_all; rm -rf "$WORK"' EXIT

start_redis "$WORK/redis" "$RPORT"
initdb -D "$PG" -A trust -U postgres >/dev/null
{
    cat "$ROOT/test/regress.conf"
    echo "port = $PGPORT"
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$WORK'"
    echo "max_connections = 20"
} >> "$PG/postgresql.conf"
valgrind --quiet --trace-children=yes --error-limit=no --num-callers=30 \
    --log-file="$WORK/vg.%p.log" postgres -D "$PG" > "$WORK/server.log" 2>&1 &
for _ in $(seq 120); do pg_isready -h "$WORK" -p "$PGPORT" >/dev/null 2>&1 && break; sleep 1; done
export PGHOST="$WORK" PGPORT PGUSER=postgres

echo "==> pg_regress under valgrind"
createdb contrib_regression
(cd "$REGRESS_DIR" && "$(dirname "$(pg_config --pgxs)")/../../src/test/regress/pg_regress" \
    --use-existing --inputdir=. --outputdir="$WORK" --bindir="$(pg_config --bindir)" \
    --dbname=contrib_regression watch capture keys settings reads query badinput)

echo "==> a workload through Redis under valgrind"
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<SQL
ALTER SYSTEM SET wtcache.redis_url = 'redis://127.0.0.1:$RPORT';
SELECT pg_reload_conf();
SQL
sleep 5
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' >/dev/null
CREATE EXTENSION wtcache;
CREATE TABLE item (id int PRIMARY KEY, org_id int NOT NULL, name text, doc jsonb);
SELECT wtcache.watch('item', tags => ARRAY['org:{org_id}']);
INSERT INTO item SELECT i, i % 5, 'item ' || i, jsonb_build_object('i', i) FROM generate_series(1, 500) i;
SELECT wtcache.wait('120s');
SELECT wtcache.get('item', i::text) FROM generate_series(1, 50) i;
SELECT * FROM wtcache.get_many('item', ARRAY['1', '2', '3', '999']);
SELECT * FROM wtcache.query('SELECT org_id, count(*) FROM item GROUP BY org_id ORDER BY 1');
SELECT * FROM wtcache.query('SELECT org_id, count(*) FROM item GROUP BY org_id ORDER BY 1');
SELECT * FROM wtcache.query('SELECT name FROM item WHERE id = $1', ARRAY['7'], tags => ARRAY['x']);
UPDATE item SET org_id = org_id + 1, name = name || '!' WHERE id % 7 = 0;
DELETE FROM item WHERE id % 11 = 0;
SELECT wtcache.invalidate(ARRAY['x', 'org:1']);
SELECT wtcache.wait('120s');
SELECT * FROM wtcache.query('SELECT org_id, count(*) FROM item GROUP BY org_id ORDER BY 1');
SELECT count(*) FROM wtcache.verify('item');
SELECT wtcache.resync('item');
SELECT wtcache.wait('120s');
SELECT count(*) FROM wtcache.verify('item', 50);
SELECT wtcache.metrics();
TRUNCATE item;
SELECT wtcache.wait('120s');
SELECT wtcache.unwatch('item');
SELECT wtcache.wait('120s');
-- a key template's purge and its truncate event: the event outlives the
-- claim's transaction (it was once built in SPI's memory and read freed;
-- with many templates to compare that memory is past SPI's first block,
-- which is given back to malloc, so memcheck sees the read)
DO $$
BEGIN
    FOR i IN 1..60 LOOP
        EXECUTE format('CREATE TABLE seat%s (org int, n int, PRIMARY KEY (org, n), who text)', i);
        PERFORM wtcache.watch(format('seat%s', i)::regclass,
                              key_template => format('s%s:{org}:seat:{n}', i));
    END LOOP;
END
$$;
CREATE TABLE seat (org int, n int, PRIMARY KEY (org, n), who text);
SELECT wtcache.watch('seat', key_template => 'org:{org}:seat:{n}');
INSERT INTO seat SELECT i % 3, i, 'x' FROM generate_series(1, 100) i;
SELECT wtcache.wait('120s');
TRUNCATE seat;
SELECT wtcache.wait('120s');
INSERT INTO seat VALUES (1, 1000, 'y');
TRUNCATE seat;
SELECT wtcache.wait('120s');
SQL

pg_ctl -D "$PG" -m fast stop >/dev/null
# errors whose first six frames include wtcache's code: a wtcache_
# function, the library, or a line of one of its source files
srcs=$(cd "$ROOT/src" && ls *.c | sed 's/\.c$//' | paste -sd'|')
bad=0
for f in "$WORK"/vg.*.log; do
    [ -s "$f" ] || continue
    if awk -v srcs="$srcs" '/^==[0-9]+== [A-Z]/ {n = 0; hit = 0; next}
            /^==[0-9]+==    (at|by) / {n++; if (n <= 6 && ($0 ~ / wtcache_|wtcache\.so/ || $0 ~ ("\\((" srcs ")\\.c:"))) hit = 1; next}
            /^==[0-9]+== *$/ {if (hit) found = 1; hit = 0}
            END {exit found ? 0 : 1}' "$f"; then
        echo "valgrind found errors in wtcache code: $f"
        cat "$f"
        bad=$((bad + 1))
    fi
done
errors=$(cat "$WORK"/vg.*.log | grep -c '^==[0-9]*== [A-Z]' || true)
echo "valgrind: $(ls "$WORK"/vg.*.log | wc -l) processes checked, $errors reports in all, $bad with wtcache frames"
[ "$bad" -eq 0 ]
echo "valgrind: 1 passed, 0 failed"
