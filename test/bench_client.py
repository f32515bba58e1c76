#!/usr/bin/python3
"""Client side of test/bench.sh: what an application sees, timed from a
client.  PostgreSQL through the PG* environment, Redis on 127.0.0.1.

    bench_client.py writes --target plain|wtcache|app --count N --rows R
    bench_client.py fill   --target app --upto K
    bench_client.py stale  --target app|wtcache|ld --upto K
    bench_client.py lag    --target wtcache|ld --rate R --seconds S --base B
    bench_client.py drain  --target ld|file [--file F]

Targets: wtcache's keys (database 0), the logical decoding peer's
(bench_decode.py, database 1, ld:<table>:<key>) and the application
write-through peer's (database 2, app:<table>:<key>).  Every command prints
one line of numbers for bench.sh.
"""
import argparse
import json
import math
import random
import sys
import time

import psycopg2
import redis

DB = {"wtcache": 0, "ld": 1, "app": 2}
TABLE = "public.pgbench_accounts"
# aids 1..PROBE_ROWS are the lag probe's alone: the load never touches them,
# so the value a probe wrote can only be replaced by the next probe
PROBE_ROWS = 1000


def pg():
    conn = psycopg2.connect("")
    conn.autocommit = True
    return conn


def rconn(args, target):
    return redis.Redis(host="127.0.0.1", port=args.redis_port, db=DB[target])


def keys_of(cur, target, aids):
    """Redis keys of pgbench_accounts rows, in the order of aids."""
    if target == "wtcache":
        cur.execute("SELECT wtcache.redis_key('pgbench_accounts', a::text)"
                    " FROM unnest(%s::int[]) WITH ORDINALITY AS u(a, n) ORDER BY n", (list(aids),))
        return [k for (k,) in cur.fetchall()]
    return ["%s:%s:%d" % (target, TABLE, a) for a in aids]


def percentile(sorted_values, p):
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def cmd_writes(args):
    """Latency of one write as the application sees it: the UPDATE,
    committed (autocommit), and for the application write-through peer the
    SET of the new row that follows it."""
    conn = pg()
    cur = conn.cursor()
    r = rconn(args, "app")
    if args.target == "app":
        cur.execute("PREPARE w(int) AS UPDATE pgbench_accounts SET abalance = abalance + 1"
                    " WHERE aid = $1 RETURNING row_to_json(pgbench_accounts)::text")
    else:
        cur.execute("PREPARE w(int) AS UPDATE pgbench_accounts SET abalance = abalance + 1"
                    " WHERE aid = $1")
    rng = random.Random(args.seed)
    warmup = 100
    lat = []
    for i in range(args.count + warmup):
        aid = rng.randint(PROBE_ROWS + 1, args.rows)
        t0 = time.perf_counter()
        cur.execute("EXECUTE w(%s)", (aid,))
        if args.target == "app":
            (row,) = cur.fetchone()
            r.set("app:%s:%d" % (TABLE, aid), row)
        t1 = time.perf_counter()
        if i >= warmup:
            lat.append((t1 - t0) * 1e6)
    lat.sort()
    print("%.0f %.0f %.0f" % (percentile(lat, 0.5), sum(lat) / len(lat), percentile(lat, 0.99)))


def rows_upto(cur, k):
    cur.execute("SELECT aid, row_to_json(a)::text FROM pgbench_accounts a WHERE aid <= %s ORDER BY aid", (k,))
    return cur.fetchall()


def cmd_fill(args):
    """The application peer caching rows 1..K, as its reads would have."""
    conn = pg()
    cur = conn.cursor()
    r = rconn(args, args.target)
    rows = rows_upto(cur, args.upto)
    for i in range(0, len(rows), 10000):
        p = r.pipeline(transaction=False)
        for aid, row in rows[i:i + 10000]:
            p.set("%s:%s:%d" % (args.target, TABLE, aid), row)
        p.execute()
    print(len(rows))


def cmd_stale(args):
    """Keys of rows 1..K whose Redis value is missing or is not the row the
    table has now (wtcache's _v left aside)."""
    conn = pg()
    cur = conn.cursor()
    r = rconn(args, args.target)
    rows = rows_upto(cur, args.upto)
    keys = keys_of(cur, args.target, [aid for aid, _ in rows])
    stale = 0
    for i in range(0, len(rows), 1000):
        for (aid, row), cached in zip(rows[i:i + 1000], r.mget(keys[i:i + 1000])):
            if cached is None:
                stale += 1
                continue
            value = json.loads(cached)
            value.pop("_v", None)
            if value != json.loads(row):
                stale += 1
    print(stale)


def cmd_lag(args):
    """Commit-to-visible lag: at args.rate probes a second, commit a change
    to one of the probe rows, then poll Redis until that key holds the new
    value.  Each probe writes a value no one wrote before (args.base minus
    its number), so the value seen is this commit's."""
    conn = pg()
    cur = conn.cursor()
    r = rconn(args, args.target)
    aids = list(range(1, PROBE_ROWS + 1))
    keys = keys_of(cur, args.target, aids)
    cur.execute("PREPARE p(int, int) AS UPDATE pgbench_accounts SET abalance = $1 WHERE aid = $2")
    n = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    lags = []
    timeouts = 0
    next_t = time.perf_counter()
    for i in range(n):
        now = time.perf_counter()
        if next_t > now:
            time.sleep(next_t - now)
        next_t = max(next_t + interval, time.perf_counter())
        j = i % PROBE_ROWS
        value = args.base - i
        needle = b'"abalance":%d,' % value
        cur.execute("EXECUTE p(%s, %s)", (value, aids[j]))
        t0 = time.perf_counter()
        while True:
            v = r.get(keys[j])
            t1 = time.perf_counter()
            if v is not None and needle in v:
                lags.append((t1 - t0) * 1e6)
                break
            if t1 - t0 > args.timeout:
                lags.append(args.timeout * 1e6)
                timeouts += 1
                break
    lags.sort()
    print("%.0f %.0f %d %d" % (percentile(lags, 0.5), percentile(lags, 0.99), len(lags), timeouts))


def file_tail(path):
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        return f.read()


def cmd_drain(args):
    """Changes per second from the commit of an UPDATE of every row to all
    of them in Redis (or, for --target file, in pg_recvlogical's output
    file).  They are all there once a change committed after the UPDATE
    is: logical decoding hands changes over in commit order, and the peer
    applies them in that order on one connection."""
    conn = pg()
    cur = conn.cursor()
    t0 = time.perf_counter()
    cur.execute("UPDATE pgbench_accounts SET abalance = abalance + 1")
    rows = cur.rowcount
    t_commit = time.perf_counter()
    cur.execute("UPDATE bench_marker SET v = v + 1 WHERE id = 1 RETURNING v")
    (v,) = cur.fetchone()
    if args.target == "file":
        needle = b"v[bigint]:%d\n" % v
        get = lambda: file_tail(args.file)
    else:
        needle = b'"v":%d}' % v
        r = rconn(args, args.target)
        marker = "%s:public.bench_marker:1" % args.target
        get = lambda: r.get(marker)
    while True:
        got = get()
        if got is not None and needle in got:
            break
        if time.perf_counter() - t_commit > args.timeout:
            sys.exit("bench_client: the %s peer did not deliver the UPDATE in %d s" % (args.target, args.timeout))
        time.sleep(0.001)
    t_done = time.perf_counter()
    print("%.0f %.0f" % ((t_commit - t0) * 1000, rows / (t_done - t_commit)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-port", type=int, required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("writes")
    p.add_argument("--target", choices=["plain", "wtcache", "app"], required=True)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    for name in ("fill", "stale"):
        p = sub.add_parser(name)
        p.add_argument("--target", choices=["wtcache", "ld", "app"], required=True)
        p.add_argument("--upto", type=int, required=True)
    p = sub.add_parser("lag")
    p.add_argument("--target", choices=["wtcache", "ld"], required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--base", type=int, default=-1)
    p.add_argument("--timeout", type=float, default=5)
    p = sub.add_parser("drain")
    p.add_argument("--target", choices=["ld", "file"], required=True)
    p.add_argument("--file")
    p.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    {"writes": cmd_writes, "fill": cmd_fill, "stale": cmd_stale,
     "lag": cmd_lag, "drain": cmd_drain}[args.cmd](args)


if __name__ == "__main__":
    main()
