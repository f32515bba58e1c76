# The reference near cache (test/near_cache.py) through the consistency
# fuzzer with faults: test/t/014_fuzz.pl's scenario, with its own seed and
# FUZZ_NEAR_CACHE=1, which runs the consumer alongside the writers and
# readers, reading Redis through the same proxy as PostgreSQL (so that
# Redis restarts, proxy stalls and cuts take its subscription too).  Once
# the writers stopped, wtcache.wait() returned and the fuzzer's own checks
# passed (Redis equals the tables), the consumer applies every message up to
# the last number handed out and dumps what it holds: each entry must equal
# its table's row and the value Redis holds, it must never have served a
# version lower than one it had served (its own count, and its log of
# served versions read here apart), it must have served at least 1,000
# reads from memory and hold at least 50 entries (the check is not
# vacuous), and it must have subscribed again after every Redis restart.
#
# Knobs: those of 014_fuzz.pl (FUZZ_SEED to replay, FUZZ_SECONDS, 30 here
# by default); NEAR_CACHE_SELFTEST=1 makes the consumer ignore every 20th
# row message, as a bug would: the final comparison must then fail (its
# check is marked TODO and a selftest check requires the failure).
use strict;
use warnings;

use FindBin;
# (loaded here, at compile time: their INIT blocks set up the test's log
# and ports, and would not run from the file loaded below)
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

$ENV{FUZZ_NEAR_CACHE} = 1;
$ENV{FUZZ_SECONDS} //= 30;
my $scenario = "$FindBin::RealBin/014_fuzz.pl";
my $done = do $scenario;
die "$scenario: $@" if $@;
die "cannot run $scenario: $!" unless defined $done;
