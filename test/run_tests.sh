#!/usr/bin/env bash
# The one command that builds, installs and tests wtcache.
#
# On a fresh Debian bookworm as root: installs the packages the build and
# the tests need (skipped when already installed), builds and installs the
# extension, hands the tree to the 'postgres' user (PostgreSQL refuses to
# run as root) and runs the pg_regress suite, then the TAP suite, as
# postgres.  Not as root: no package or install step, the tests run as the
# current user against what is already installed.
#
# Exits non-zero on any failure; the last lines are prove's own summary.
# Environment: PROVE_TESTS='test/t/001_pipeline.pl' runs a subset of the
# TAP tests; WTCACHE_TEST_TIMEOUT (seconds, default 4200) bounds the suite.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
MAKE=(make with_llvm=no)
PKGS=(postgresql-15 postgresql-server-dev-15 libhiredis-dev libssl-dev redis-server
      redis-tools openssl libipc-run-perl python3-redis python3-psycopg2
      make gcc libc6-dev)

say() { printf '\n==> %s\n' "$*"; }
. "$ROOT/test/lib/servers.sh"

if [ "$(id -u)" -eq 0 ]; then
    say "packages"
    install_packages "${PKGS[@]}"
fi

export PATH="$(pg_config --bindir):$PATH"

say "building"
"${MAKE[@]}"

if [ "$(id -u)" -eq 0 ]; then
    say "installing the extension"
    "${MAKE[@]}" install
    # PostgreSQL refuses root: the tests run as postgres, who must own the
    # tree.  The owner is restored at exit, so that git (which refuses a
    # work tree owned by someone else) keeps working for the caller.
    orig_owner=$(stat -c '%u:%g' "$ROOT")
    if [ "$orig_owner" != "$(id -u postgres):$(id -g postgres)" ]; then
        trap 'chown -R "$orig_owner" "$ROOT"' EXIT
    fi
    chown -R postgres: "$ROOT"
    as_tester() { runuser -u postgres -- "$@"; }
else
    as_tester() { "$@"; }
fi

LOGDIR=$(mktemp -d /tmp/wtcache-test.XXXXXX)
chmod 777 "$LOGDIR"
TIMEOUT=${WTCACHE_TEST_TIMEOUT:-4200}
status=0

# pg_regress and the TAP suite run as two make calls, so a pg_regress
# failure does not hide the TAP results.
say "pg_regress suite"
rm -f regression.diffs
set +e
as_tester timeout -k 30 "$TIMEOUT" "${MAKE[@]}" installcheck TAP_TESTS= 2>&1 | tee "$LOGDIR/regress.out"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    status=1
    if [ -s regression.diffs ]; then
        say "regression.diffs"
        cat regression.diffs
    fi
    # The temp instance's server log, if pg_regress kept it.
    for f in tmp_check/log/postmaster.log; do
        [ -f "$f" ] && { say "tail of $f"; tail -n 60 "$f"; }
    done
fi

say "TAP suite"
prove_args=()
[ -n "${PROVE_TESTS:-}" ] && prove_args=(PROVE_TESTS="$PROVE_TESTS")
set +e
as_tester timeout -k 30 "$TIMEOUT" "${MAKE[@]}" installcheck REGRESS= "${prove_args[@]}" 2>&1 | tee "$LOGDIR/tap.out"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    status=1
    # Show the end of the log of each failed test, then repeat prove's
    # summary so that it stays the last thing printed.
    failed=$(sed -n 's#^\(test/t/[^ ]*\.pl\) *(Wstat.*#\1#p' "$LOGDIR/tap.out" | sort -u)
    [ -z "$failed" ] && failed=$(ls test/t/*.pl 2>/dev/null || true)
    for t in $failed; do
        base=$(basename "$t" .pl)
        log="tmp_check/log/regress_log_$base"
        [ -f "$log" ] || continue
        say "last lines of $log"
        tail -n 80 "$log"
        for srv in tmp_check/log/"${base}"_*.log; do
            [ -f "$srv" ] || continue
            say "wtcache / error lines of $srv"
            grep -E 'wtcache|Redis|ERROR|FATAL|PANIC|terminated by signal' "$srv" | tail -n 40 || true
        done
    done
    if grep -q '^Test Summary Report' "$LOGDIR/tap.out"; then
        say "summary (repeated)"
        sed -n '/^Test Summary Report/,/^Result: /p' "$LOGDIR/tap.out"
    elif grep -q '^Result: ' "$LOGDIR/tap.out"; then
        grep -E '^(Files=|Result: )' "$LOGDIR/tap.out"
    else
        echo "Result: FAIL (the TAP suite did not run to its summary, exit $rc)"
    fi
elif [ "$status" -ne 0 ]; then
    # TAP passed but pg_regress failed: say so last, in prove's words.
    echo "pg_regress failed (see above); TAP: $(grep -E '^Result: ' "$LOGDIR/tap.out" | tail -n 1)"
    echo "Result: FAIL"
fi
rm -rf "$LOGDIR"
exit "$status"
