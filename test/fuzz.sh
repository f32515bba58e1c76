#!/usr/bin/env bash
# The consistency fuzzer (test/t/014_fuzz.pl) on its own, for longer than
# in the test suite: concurrent writers and readers against a PostgreSQL
# and a Redis of its own, with faults, then Redis compared with every table.
#
#   bash test/fuzz.sh                                    # 300 s, a random seed
#   FUZZ_SECONDS=600 bash test/fuzz.sh                   # ten minutes
#   FUZZ_SEED=1234 FUZZ_SECONDS=120 bash test/fuzz.sh    # replay a seed
#
# PostgreSQL reaches Redis through test/lib/redis_proxy.pl, which the
# fault injection stalls and cuts (see the fault kinds in
# test/lib/WtcacheFuzz/Faults.pm).
#
# Environment, passed through to the test: FUZZ_SEED (default: random,
# printed), FUZZ_SECONDS (default 300 here; 40 in the test suite),
# FUZZ_SESSIONS (writers, 4), FUZZ_READERS (2), FUZZ_FAULTS (1: inject
# faults; 0: none), FUZZ_SELFTEST (1: plant stale values in Redis and pass
# only if they are found), FUZZ_AUDIT (1: keep a copy of every queue row
# and acknowledgement for a post-mortem), FUZZ_LIVE_AUDIT (keys per
# second of the live audit, wtcache.audit_rate, which must confirm no
# mismatch; 500, 0: off), FUZZ_KEEP (1: keep the copy and
# its logs after a pass too).  Every failure prints the line that replays
# it; test/t/014_fuzz.pl describes what is checked.
#
# It tests the wtcache that is installed (make install, or
# test/run_tests.sh as root, installs it); it builds and installs nothing.
# As root it runs the test as postgres (PostgreSQL refuses root) from a
# copy of the tree owned by postgres, the way test/run_tests.sh runs
# `make installcheck`; the copy is removed after a pass (unless
# FUZZ_KEEP=1) and kept, with its logs, after a failure.  Not as root it
# runs in the tree itself.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PATH="$(pg_config --bindir):$PATH"
export PATH
MAKE=(make with_llvm=no)

say() { printf '\n==> %s\n' "$*"; }

if [ ! -f "$(pg_config --pkglibdir)/wtcache.so" ]; then
    echo "wtcache is not installed in $(pg_config --pkglibdir): run make install" \
         "(or bash test/run_tests.sh as root) first" >&2
    exit 2
fi

# The seed is chosen here, so that the replay line below can name it.
FUZZ_SEED=${FUZZ_SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
knobs=(FUZZ_SEED="$FUZZ_SEED" FUZZ_SECONDS="$FUZZ_SECONDS" FUZZ_VERBOSE=1)
replay="FUZZ_SEED=$FUZZ_SEED FUZZ_SECONDS=$FUZZ_SECONDS"
for v in FUZZ_SESSIONS FUZZ_READERS FUZZ_FAULTS FUZZ_SELFTEST FUZZ_AUDIT FUZZ_LIVE_AUDIT FUZZ_NEAR_CACHE NEAR_CACHE_SELFTEST; do
    if [ -n "${!v:-}" ]; then
        knobs+=("$v=${!v}")
        replay+=" $v=${!v}"
    fi
done
replay+=" bash test/fuzz.sh"

if [ "$(id -u)" -eq 0 ]; then
    work=$(mktemp -d /tmp/wtcache-fuzz.XXXXXX)
    # The tracked and untracked files, not build products or old logs.
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -co --exclude-standard -z \
            | tar -C "$ROOT" --null --ignore-failed-read -cf - -T - | tar -xf - -C "$work"
    else
        tar -C "$ROOT" --exclude=./tmp_check --exclude='*.o' --exclude='*.so' -cf - . \
            | tar -xf - -C "$work"
    fi
    chown -R postgres: "$work"
    cd "$work"
    as_tester() { runuser -u postgres -- "$@"; }
else
    work=$ROOT
    as_tester() { "$@"; }
fi

say "fuzzing for $FUZZ_SECONDS s (replay: $replay)"
out=$(mktemp /tmp/wtcache-fuzz-out.XXXXXX)
chmod 644 "$out"
set +e
as_tester env "${knobs[@]}" timeout -k 30 $(( FUZZ_SECONDS + 900 )) \
    "${MAKE[@]}" installcheck REGRESS= PROVE_TESTS=test/t/014_fuzz.pl 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e

if [ "$rc" -eq 0 ]; then
    say "passed: $(grep -E '^fuzz: seed .*changes committed' "$out" | tail -n 1)"
    if [ "${FUZZ_KEEP:-0}" = 1 ]; then
        echo "logs kept in $work/tmp_check/log (FUZZ_KEEP=1)"
    elif [ "$work" != "$ROOT" ]; then
        rm -rf "$work"
    fi
    rm -f "$out"
    exit 0
fi

# Failed: the end of the test's log, the server's errors, where the rest is.
logs="$work/tmp_check/log"
if [ -f "$logs/regress_log_014_fuzz" ]; then
    say "last lines of $logs/regress_log_014_fuzz"
    tail -n 80 "$logs/regress_log_014_fuzz"
fi
for srv in "$logs"/014_fuzz_fuzz*.log; do
    [ -f "$srv" ] || continue
    say "wtcache / crash lines of $srv"
    grep -E 'wtcache|Redis|PANIC|TRAP|terminated by signal' "$srv" | tail -n 40 || true
done
# The proxy between PostgreSQL and Redis: its stalls and cuts.
for px in "$logs"/014_fuzz_proxy_*.log; do
    [ -f "$px" ] || continue
    say "last lines of $px"
    tail -n 20 "$px"
done
say "FAILED (exit $rc); logs kept in $logs (sessions: 014_fuzz_writer*.log, 014_fuzz_reader*.log)"
echo "replay: $replay"
rm -f "$out"
exit "$rc"
