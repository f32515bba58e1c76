#!/usr/bin/python3
"""A reference near cache for wtcache: rows kept in the application's memory,
dropped on the messages of the events channel.

It follows README.md, "Reading Redis directly and near caches", rule by
rule; copy the NearCache class (it needs only python3-redis) and read it
with that section open.  The rest of this file is the driver that
test/t/042_near_cache.pl runs through the consistency fuzzer.

    nc = NearCache(redis.Redis(port=6379, socket_timeout=0.5), "mydb")
    row = nc.get_row("wtc:{mydb:public.accounts:42}")
    if row is None:
        row = read_from_postgres(42)     # not cached, or Redis not trusted now
    ...
    nc.poll(0.05)                        # in the loop: apply the messages

One thread: get() and poll() apply the messages that have arrived before
they answer, so call one of them often (a server loop calls poll() when it
is idle).  With threads, guard the object with a lock.

Driver (see --help):
    near_cache.py --port P --db D --dir DIR [--prefix wtc:] [--seed N]
reads random row keys of D through the cache until DIR/stop appears (or
SIGUSR1), then processes every message up to the number in DIR/stop (or the
current <prefix>{<db>}:event_seq), writes DIR/dump.json (entries, counters)
and exits.  DIR/served.log gets "<redis_key> <_v>" each time the version it
serves for a key changes, for the test to check on its own that versions
never go back.  NEAR_CACHE_SELFTEST=1 ignores every 20th row message, as a
bug would: the test's final comparison must then fail.
"""

import argparse
import base64
import json
import os
import random
import re
import signal
import sys
import time

import redis

# How the results of NearCache.lookup() say where a value came from.
MEMORY = "memory"        # an entry held in memory
REDIS = "redis"          # a trusted direct read from Redis (now held, if it can be)
MISS = "miss"            # Redis has no value for the key: read the table
UNTRUSTED = "untrusted"  # Redis cannot be trusted now (lost data, down): read the table


def escape_name(name):
    """A database, schema or table name as it appears in a key (README,
    "What lands in Redis": % : { } and . become %XX)."""
    out = []
    for ch in name:
        if ch in "%:{}.":
            out.append("%%%02X" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


class NearCache:
    """Rows of one database, kept in memory, never older than one already
    served.

    Entries live only while the subscription is known complete: every
    message of the database since it began has been applied.  Anything that
    breaks that (a gap in the numbers, a lost connection, a silent one)
    drops every entry.  Per key, the highest version served or announced is
    kept apart from the entries (and survives their drops): nothing with a
    lower "_v" is ever stored or served again.
    """

    def __init__(self, client, db, prefix="wtc:", ping_interval=0.5, ping_timeout=1.5,
                 retry_min=0.05, retry_max=2.0, ignore_every=0, log=None):
        self.r = client                 # redis.Redis; give it a socket_timeout
        self.db = db
        self.prefix = prefix
        self.channel = prefix + "events"
        head = prefix + "{" + escape_name(db)
        self.seq_key = head + "}:event_seq"
        self.gen_key = head + "}:gen"
        self.row_head = head + ":"      # every row key of the database starts so
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.ignore_every = ignore_every  # NEAR_CACHE_SELFTEST only: a planted bug
        self.log = log or (lambda msg: None)

        self.entries = {}               # redis_key -> (raw value bytes, _v)
        self.highest = {}               # redis_key -> highest _v served or announced
        self.highest_gen = None         # highest generation marker read
        self.epoch = 0                  # +1 at every drop of everything

        self.sub = None                 # redis PubSub while subscribed and in step
        self.baseline = None            # event_seq read right after subscribing
        self.last_seq = None            # number of the last message applied
        self.last_ping = 0.0
        self.ping_out = None            # when the unanswered PING went out
        self.sub_retry_at = 0.0
        self.sub_backoff = retry_min
        self.redis_retry_at = 0.0
        self.redis_backoff = retry_min

        self.n = dict.fromkeys((
            "hits", "fills", "misses", "untrusted", "refused_older", "not_stored",
            "messages", "other_db", "applied_rows", "dropped_by_rows", "truncates",
            "dropped_by_truncates", "tag_invalidations", "resets", "gaps", "seq_back",
            "subscribes", "subscriptions_lost", "silent_subscriptions", "drops_all",
            "dropped_entries", "redis_errors", "not_rows", "other_format", "malformed",
            "ignored_selftest"), 0)

    # ---------------------------------------------------------------- reads

    def get_row(self, redis_key):
        """The row as a dict without "_v", or None: read the table."""
        source, raw, _v = self.lookup(redis_key)
        if raw is None:
            return None
        row = json.loads(raw)
        row.pop("_v", None)
        return row

    def lookup(self, redis_key):
        """(source, raw value, _v): source is MEMORY, REDIS, MISS or
        UNTRUSTED; raw is the bytes Redis held, "_v" included, or None."""
        self.poll(0)
        entry = self.entries.get(redis_key)
        if entry is not None:
            self.n["hits"] += 1
            return MEMORY, entry[0], entry[1]
        return self._fill(redis_key)

    def _fill(self, redis_key):
        # Rule 5 and the direct reader's rules: the marker and the row in one
        # pipeline; not while Redis is failing (back off, serve nothing).
        now = time.monotonic()
        if now < self.redis_retry_at:
            self.n["untrusted"] += 1
            return UNTRUSTED, None, None
        epoch = self.epoch
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.gen_key)
            pipe.get(redis_key)
            gen, raw = pipe.execute()
        except redis.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                self._redis_failed(e)
            else:
                # a table of format 'hash' (README): this cache keeps JSON rows
                self.n["other_format"] += 1
            self.n["untrusted"] += 1
            return UNTRUSTED, None, None
        except redis.RedisError as e:
            self._redis_failed(e)
            self.n["untrusted"] += 1
            return UNTRUSTED, None, None
        self.redis_backoff = self.retry_min
        # Direct reader rule 2: missing or lower marker: Redis lost writes
        # and is not repaired yet.
        if gen is None or (self.highest_gen is not None and int(gen) < self.highest_gen):
            self.n["untrusted"] += 1
            return UNTRUSTED, None, None
        self.highest_gen = int(gen)
        if raw is None:
            self.n["misses"] += 1
            return MISS, None, None
        try:
            v = int(json.loads(raw)["_v"])
        except (ValueError, KeyError, TypeError):
            self.n["not_rows"] += 1     # not a row value: nothing wtcache wrote
            self.n["untrusted"] += 1
            return UNTRUSTED, None, None
        # Rule 5: never a version below one served or announced.
        if v < self.highest.get(redis_key, 0):
            self.n["refused_older"] += 1
            self.n["untrusted"] += 1
            return UNTRUSTED, None, None
        self.highest[redis_key] = v
        self.n["fills"] += 1
        # Kept only while in step with the channel, and only if nothing was
        # dropped while the read was on its way (with threads, that can
        # happen; here it cannot, but the check is what a copy needs).
        if self.sub is not None and self.epoch == epoch:
            self.entries[redis_key] = (raw, v)
        else:
            self.n["not_stored"] += 1
        return REDIS, raw, v

    def _redis_failed(self, error):
        self.n["redis_errors"] += 1
        self.log("Redis failed on a read: %s; retry in %.2f s" % (error, self.redis_backoff))
        self.redis_retry_at = time.monotonic() + self.redis_backoff * random.uniform(0.5, 1.0)
        self.redis_backoff = min(self.redis_backoff * 2, self.retry_max)

    # ------------------------------------------------------------- messages

    def poll(self, timeout=0.0):
        """Apply the messages that arrived (waiting up to timeout for one);
        keep the subscription alive, or get it back."""
        now = time.monotonic()
        if self.sub is None:
            if now >= self.sub_retry_at:
                self._subscribe()
            if self.sub is None:
                if timeout:
                    time.sleep(min(timeout, max(0.0, self.sub_retry_at - now)))
                return
        try:
            msg = self.sub.get_message(timeout=timeout)
            while msg is not None:
                self._on_message(msg)
                if self.sub is None:
                    # the message ended the subscription (rule 4)
                    return
                msg = self.sub.get_message(timeout=0)
            # A subscription can die silently (a network partition): a PING
            # that gets no answer in time means it is lost (rule 4).
            now = time.monotonic()
            if self.ping_out is not None and now - self.ping_out > self.ping_timeout:
                self.n["silent_subscriptions"] += 1
                self._lost("no answer to a PING for %.1f s" % (now - self.ping_out))
            elif self.ping_out is None and now - self.last_ping >= self.ping_interval:
                self.sub.ping("nc")
                self.ping_out = self.last_ping = now
        except (redis.RedisError, OSError) as e:
            self._lost("subscription failed: %s" % e)

    def _subscribe(self):
        # Rule 1: subscribe, wait until Redis confirms it, then read the
        # number of the last message: the next one is one more.
        sub = self.r.pubsub()
        try:
            sub.subscribe(self.channel)
            deadline = time.monotonic() + self.ping_timeout
            while True:
                msg = sub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if msg is not None and msg["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise redis.TimeoutError("no confirmation of SUBSCRIBE")
            seq = self.r.get(self.seq_key)
        except (redis.RedisError, OSError) as e:
            sub.close()
            self.log("could not subscribe: %s; retry in %.2f s" % (e, self.sub_backoff))
            self.sub_retry_at = time.monotonic() + self.sub_backoff * random.uniform(0.5, 1.0)
            self.sub_backoff = min(self.sub_backoff * 2, self.retry_max)
            return
        self.drop_all("subscribed")     # (empty already, unless used unsubscribed)
        self.sub = sub
        self.baseline = int(seq or 0)
        self.last_seq = None
        self.ping_out = None
        self.last_ping = time.monotonic()
        self.sub_backoff = self.retry_min
        self.redis_retry_at, self.redis_backoff = 0.0, self.retry_min   # it answered
        self.n["subscribes"] += 1
        self.log("subscribed; %s = %d" % (self.seq_key, self.baseline))

    def _lost(self, why):
        # Rule 4: drop everything, start again at rule 1.
        self.n["subscriptions_lost"] += 1
        self.log("subscription lost (%s): dropping everything" % why)
        try:
            self.sub.close()
        except Exception:
            pass
        self.sub = None
        self.drop_all("subscription lost")
        self.sub_retry_at = 0.0         # at once; backoff if that fails

    def _on_message(self, msg):
        if msg["type"] == "pong":
            self.ping_out = None
            return
        if msg["type"] != "message":
            return
        try:
            m = json.loads(msg["data"])
        except ValueError:
            # Not a message this protocol sends: the stream cannot be
            # trusted, so as after a lost subscription (rule 4).
            self.n["malformed"] += 1
            self.log("a message that is not JSON: %r" % (msg["data"][:300],))
            self._lost("a message that is not JSON")
            return
        self.n["messages"] += 1
        if m.get("db") != self.db:
            # Other databases number their own messages: not ours to count.
            self.n["other_db"] += 1
            return
        # Rule 2: the first message carries a number up to one past the one
        # read at subscribing, each later one the number after the last.
        seq = m["seq"]
        if self.last_seq is None:
            in_step = seq <= self.baseline + 1
        else:
            in_step = seq == self.last_seq + 1
        if not in_step:
            expected = self.baseline + 1 if self.last_seq is None else self.last_seq + 1
            self.n["gaps" if seq > expected else "seq_back"] += 1
            self.log("message %d where %d was expected: dropping everything" % (seq, expected))
            self.drop_all("gap")
        self.last_seq = seq
        self._apply(m)

    def _apply(self, m):
        # Rule 3.
        op = m["op"]
        v = m["v"]
        if "redis_key" in m:            # a row: upsert, delete, invalidate with a key
            self.n["applied_rows"] += 1
            if self.ignore_every and self.n["applied_rows"] % self.ignore_every == 0:
                self.n["ignored_selftest"] += 1
                return
            key = m["redis_key"]
            if v > self.highest.get(key, 0):
                self.highest[key] = v
            entry = self.entries.get(key)
            if entry is not None and entry[1] < v:
                del self.entries[key]
                self.n["dropped_by_rows"] += 1
        elif op == "truncate":
            self.n["truncates"] += 1
            if "key_template" in m:
                # a table with a key template: its keys are the prefix and
                # the template, each {column} any text without : { }
                shape = re.compile(re.escape(self.prefix) + "".join(
                    "[^:{}]*" if part.startswith("{") else re.escape(part)
                    for part in re.split(r"(\{[^}]*\})", m["key_template"]) if part) + r"\Z")
                gone = [k for k in self.entries if shape.match(k)]
            else:
                head = self.row_head + escape_name(m["schema"]) + "." + escape_name(m["relname"]) + ":"
                gone = [k for k in self.entries if k.startswith(head)]
            for k in gone:
                del self.entries[k]
            self.n["dropped_by_truncates"] += len(gone)
        elif op == "reset":
            self.n["resets"] += 1
            self.log("reset, message %d (%s): dropping everything" % (m["seq"], m.get("reason")))
            self.drop_all("reset")
            if m.get("versions_restart"):
                # Redis was ahead of the database (a restore): versions
                # start again lower, and what was kept of them means nothing.
                self.highest.clear()
                self.highest_gen = None
        elif op == "invalidate":
            # Tags invalidated by a batch: they concern cached query
            # results; every row of the batch had its own message.
            self.n["tag_invalidations"] += 1

    def drop_all(self, why):
        self.epoch += 1
        if self.entries:
            self.n["drops_all"] += 1
            self.n["dropped_entries"] += len(self.entries)
            self.entries.clear()

    # --------------------------------------------------------------- status

    def in_step_through(self, seq):
        """Every message numbered up to seq has been applied (or came
        before the subscription, whose entries all came after)."""
        if self.sub is None:
            return False
        return self.baseline >= seq or (self.last_seq is not None and self.last_seq >= seq)


# ------------------------------------------------------------------ driver

def glob_escape(s):
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def row_key_candidate(key, row_head):
    # Row keys end in "}" (README); "<prefix>{<db>:gen<n>}" is a Cluster marker.
    return key.startswith(row_head) and key.endswith("}") and "." in key[len(row_head):]


def main():
    ap = argparse.ArgumentParser(description="Drive a NearCache through random reads (test/t/042_near_cache.pl).")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--db", required=True)
    ap.add_argument("--prefix", default="wtc:")
    ap.add_argument("--dir", required=True, help="control file 'stop', dump.json and served.log go here")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--rate", type=int, default=2000, help="reads per second, at most")
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    random.seed(seed)
    t0 = time.monotonic()

    def log(msg):
        print("%8.3f %s" % (time.monotonic() - t0, msg), flush=True)

    selftest = os.environ.get("NEAR_CACHE_SELFTEST", "") not in ("", "0")
    client = redis.Redis(host=args.host, port=args.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    nc = NearCache(client, args.db, prefix=args.prefix, ignore_every=20 if selftest else 0, log=log)
    log("near cache of %s on %s:%d, seed %d%s" % (args.db, args.host, args.port, seed,
                                                  ", SELFTEST: every 20th row message ignored" if selftest else ""))

    stop_file = os.path.join(args.dir, "stop")
    stop = {"asked": False}
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(asked=True))
    served_log = open(os.path.join(args.dir, "served.log"), "w")
    last_served = {}                    # redis_key -> _v served last
    max_served = {}                     # redis_key -> highest _v served
    value_of = {}                       # (redis_key, _v) -> the value served at that version
    d = {"reads": 0, "older_than_served": 0, "same_version_other_value": 0, "key_scans": 0}
    keys, hot = [], []
    next_scan = 0.0
    batch = max(1, args.rate // 40)

    while not stop["asked"] and not os.path.exists(stop_file):
        if args.parent and not os.path.exists("/proc/%d" % args.parent):
            log("parent %d is gone: exiting" % args.parent)
            return 2
        now = time.monotonic()
        if now >= next_scan:
            # The keys to read: the database's row keys in Redis now.
            try:
                found = [k.decode("utf-8", "surrogateescape")
                         for k in client.scan_iter(match=glob_escape(nc.row_head) + "*", count=1000)]
                found = [k for k in found if row_key_candidate(k, nc.row_head)]
                if found:
                    keys = found
                    hot = random.sample(keys, min(100, len(keys)))
                d["key_scans"] += 1
            except redis.RedisError as e:
                log("key scan failed: %s" % e)
            next_scan = now + 2.0
        for _ in range(batch if keys else 0):
            key = random.choice(hot) if random.random() < 0.7 else random.choice(keys)
            source, raw, v = nc.lookup(key)
            d["reads"] += 1
            if raw is None:
                continue
            # The property under test, counted here apart from the class.
            if v < max_served.get(key, 0):
                d["older_than_served"] += 1
                log("OLDER THAN SERVED: %s _v %d after %d" % (key, v, max_served[key]))
            else:
                max_served[key] = v
            seen = value_of.setdefault((key, v), raw)
            if seen != raw:
                d["same_version_other_value"] += 1
                log("SAME VERSION, OTHER VALUE: %s _v %d: %r then %r" % (key, v, seen[:200], raw[:200]))
            if last_served.get(key) != v:
                last_served[key] = v
                served_log.write("%s %d\n" % (key, v))
        nc.poll(0.025)

    # Stop reading; apply every message up to the number asked for (or the
    # current one), then dump.
    served_log.close()
    target = None
    try:
        with open(stop_file) as f:
            text = f.read().strip()
            target = int(text) if text else None
    except (OSError, ValueError):
        pass
    deadline = time.monotonic() + 60
    while target is None and time.monotonic() < deadline:
        try:
            target = int(client.get(nc.seq_key) or 0)
        except redis.RedisError as e:
            log("reading %s failed: %s" % (nc.seq_key, e))
            time.sleep(0.1)
    log("stopping: applying every message up to %s" % target)
    while target is not None and not nc.in_step_through(target) and time.monotonic() < deadline:
        nc.poll(0.05)
    done = target is not None and nc.in_step_through(target)
    dump = {
        "seed": seed,
        "selftest": selftest,
        "target_seq": target,
        "in_step": done,
        "last_seq": nc.last_seq,
        "baseline": nc.baseline,
        "counters": dict(nc.n, **d),
        "entries": {k: {"v": v, "value_b64": base64.b64encode(raw).decode("ascii")}
                    for k, (raw, v) in nc.entries.items()},
    }
    tmp = os.path.join(args.dir, "dump.json.tmp")
    with open(tmp, "w") as f:
        json.dump(dump, f)
    os.rename(tmp, os.path.join(args.dir, "dump.json"))
    log("dumped %d entries; counters: %s" % (len(nc.entries), json.dumps(dump["counters"], sort_keys=True)))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
