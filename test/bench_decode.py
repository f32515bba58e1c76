#!/usr/bin/python3
"""The logical decoding peer of test/bench.sh: a small consumer that feeds
Redis from a replication slot, as one would write it by hand.

    bench_decode.py --redis-port P --db N --prefix ld: --key public.t=id ... \
        -- pg_recvlogical ... --plugin test_decoding --start -f -

Runs the pg_recvlogical command given after "--", reads its test_decoding
output and pipelines one SET of the row as JSON (INSERT, UPDATE) or one DEL
(DELETE) per change to Redis, on one connection, for the tables named with
--key (TABLE=KEY_COLUMN); other tables are skipped.  SIGTERM stops
pg_recvlogical; the consumer exits once every change it read is in Redis,
printing what it did on stderr.

What it leaves out, as small consumers do: versions (a single consumer
applies changes in commit order, so a plain SET is right while it is the
only writer), TRUNCATE, key changes, TOAST values left out of the output,
and JSON for NaN and infinite floats.
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import selectors
import subprocess
import sys

# name[type]:value, the value quoted with '' inside, or a bare word; array
# types print as type[].  Written without per-character alternation: the
# regular expression is most of the consumer's time per row.
COLUMN = re.compile(rb"(\S+?)\[([^\[\]]*(?:\[\][^\[\]]*)*)\]:('[^']*(?:''[^']*)*'|\S+)")
# test_decoding prints these types unquoted, as JSON numbers
NUMBERS = {b"smallint", b"integer", b"bigint", b"numeric", b"real", b"double precision", b"oid"}
NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')


def json_value(typ, val):
    if val[:1] == b"'":
        s = val[1:-1].replace(b"''", b"'")
        if NEEDS_ESCAPE.search(s):
            return json.dumps(s.decode(), ensure_ascii=False).encode()
        return b'"' + s + b'"'
    if val == b"null" or typ in NUMBERS or typ == b"boolean":
        return val
    return b'"' + val + b'"'


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


class Replies:
    """Counts Redis's replies: SET, DEL and SELECT answer one line each, and
    none contains '-' unless it is an error, so counting bytes is enough.
    Read in the main loop, not in a thread: a thread waking for every few
    replies fights the parser for the GIL and halves the throughput."""

    def __init__(self, sock):
        self.sock = sock
        self.count = 0
        self.errors = 0

    def read(self):
        data = self.sock.recv(1 << 20)
        if not data:
            sys.exit("bench_decode: Redis closed the connection")
        self.count += data.count(b"\n")
        self.errors += data.count(b"-")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--db", type=int, default=0)
    ap.add_argument("--prefix", default="ld:")
    ap.add_argument("--key", action="append", default=[], help="TABLE=COLUMN, TABLE as schema.name")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    keys = {}
    for k in args.key:
        table, col = k.split("=", 1)
        keys[table.encode()] = col.encode()
    prefix = args.prefix.encode()

    sock = socket.create_connection(("127.0.0.1", args.redis_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = Replies(sock)
    sent = 1
    sock.sendall(b"*2\r\n" + bulk(b"SELECT") + bulk(b"%d" % args.db))

    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
    signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))

    fd = child.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    rest = b""
    sets = dels = 0
    eof = False
    while not eof:
        for k, _ in sel.select():
            if k.fileobj is sock:
                replies.read()
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                eof = True
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            out = []
            for line in lines:
                if not line.startswith(b"table "):
                    continue                # BEGIN, COMMIT
                table, _, rest_of_line = line[6:].partition(b": ")
                keycol = keys.get(table)
                if keycol is None:
                    continue
                op, _, data = rest_of_line.partition(b": ")
                cols = COLUMN.findall(data)
                key = None
                for name, typ, val in cols:
                    if name == keycol:
                        key = val.strip(b"'")
                        break
                if key is None:
                    continue
                rkey = prefix + table + b":" + key
                if op == b"DELETE":
                    out.append(b"*2\r\n$3\r\nDEL\r\n" + bulk(rkey))
                    dels += 1
                else:
                    value = b"{" + b",".join(b'"' + name + b'":' + json_value(typ, val)
                                             for name, typ, val in cols) + b"}"
                    out.append(b"*3\r\n$3\r\nSET\r\n" + bulk(rkey) + bulk(value))
                    sets += 1
            if out:
                sock.sendall(b"".join(out))
                sent += len(out)
    child.wait()
    while replies.count < sent:
        replies.read()
    sock.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print("bench_decode: %d SET, %d DEL, %d Redis errors; consumer CPU %.1f s user %.1f s system"
          % (sets, dels, replies.errors, ru.ru_utime, ru.ru_stime), file=sys.stderr)
    sys.exit(1 if replies.errors else 0)


if __name__ == "__main__":
    main()
