# WtcacheFuzz::Generate: what the consistency fuzzer (test/t/014_fuzz.pl)
# writes: random values of every column type, keys, the four watched
# tables' definitions, and random statements over them.
#
# Only rand() is used, seeded per process by the test (the parent) and by
# each forked session, so that a seed replays: a change here that adds,
# drops or reorders a rand() call changes what every seed means.
#
# This file is UTF-8 and deliberately has no "use utf8": strings are bytes,
# as they go to psql and come back from it.
package WtcacheFuzz::Generate;

use strict;
use warnings;

use Exporter 'import';

our @EXPORT = qw(
  pick
  chance
  sql_quote
  sql_lit
  copy_field
  fuzz_table
  fuzz_tables
  write_through_tables
  some_keys
  row_values
  initial_rows
  random_statement
  part_tables
  part_slots
);

############################################################################
# Random values
############################################################################

sub pick { return $_[ int(rand(scalar @_)) ]; }
sub chance { return rand() < $_[0]; }

# Text with what keys and JSON must survive: separators of the key layout,
# quotes, backslashes, tabs, newlines, non-ASCII.
my @TEXT_BITS = ('plain', "it's", 'a:b', '{c}', '}{', '100%', '%3A', 'with space', "tab\there",
	"new\nline", 'back\\slash', 'ünïcødé ☃', '"dq"', '', ' ', '日本');

sub g_text
{
	return undef if chance(0.15);
	return join('', map { pick(@TEXT_BITS) } 0 .. int(rand(3))) . int(rand(1000));
}

sub g_int
{
	return undef if chance(0.15);
	return pick(0, -1, 1, 2147483, -2147483) if chance(0.1);
	return int(rand(2000)) - 1000;
}

sub g_numeric
{
	return undef if chance(0.15);
	return pick('NaN', 'Infinity', '-Infinity', '0', '-0.000', '1e-20',
		'123456789012345678901234567890.123456789') if chance(0.08);
	return sprintf('%.*f', int(rand(6)), (rand() - 0.5) * 10**int(rand(9)));
}

sub g_intarr
{
	return undef if chance(0.2);
	return '{}' if chance(0.1);
	return '{{1,2},{3,NULL}}' if chance(0.05);
	return '{' . join(',', map { chance(0.1) ? 'NULL' : int(rand(100000)) - 50000 } 0 .. int(rand(6))) . '}';
}

sub json_str
{
	my ($s) = @_;
	$s =~ s/(["\\])/\\$1/g;
	$s =~ s/\n/\\n/g;
	$s =~ s/\t/\\t/g;
	return qq{"$s"};
}

sub json_value
{
	my ($depth) = @_;
	my $r = rand();
	if ($depth <= 0 || $r < 0.45)
	{
		return pick(
			sub { int(rand(1e6)) - 500000 },
			sub { sprintf('%.3f', rand(1000) - 500) },
			sub { pick('1.5e10', '-0.25', '0', '1e-7', '12345678901234567890') },
			sub { json_str(pick(@TEXT_BITS) . int(rand(100))) },
			sub { pick('"\u00e9\u2603"', '"\\\\"', '"x:y{z}%"') },
			sub { pick('true', 'false', 'null') })->();
	}
	if ($r < 0.7)
	{
		return '[' . join(', ', map { json_value($depth - 1) } 1 .. int(rand(4))) . ']';
	}
	my %seen;
	my @keys = grep { !$seen{$_}++ } map { pick('a', 'k:1', '{x}', '%', 'sp ace', 'ü', '', 'n') } 1 .. int(rand(5));
	return '{' . join(', ', map { json_str($_) . ': ' . json_value($depth - 1) } @keys) . '}';
}

sub g_json
{
	return undef if chance(0.15);
	return pick('null', '0', '"s"', '[]', '{}', 'true') if chance(0.15);
	return json_value(3);
}

sub g_ts
{
	return undef if chance(0.15);
	return pick('infinity', '-infinity', '1999-12-31 23:59:59.999999+00', '2000-02-29 12:00:00-08',
		'0044-03-15 12:00:00+00 BC', '2024-03-31 02:30:00') if chance(0.06);
	my @g = gmtime(946684800 + int(rand(40 * 365 * 86400)));
	return sprintf('%04d-%02d-%02d %02d:%02d:%02d%s%s', $g[5] + 1900, $g[4] + 1, $g[3], $g[2], $g[1], $g[0],
		chance(0.5) ? sprintf('.%06d', int(rand(1e6))) : '',
		pick('+00', '+02', '-05', '+05:30', '+13:45', ''));    # '': the session's TimeZone
}

# Mostly NULL; sometimes tens of kB (TOASTed), hex noise or a long run.
sub g_big
{
	return undef unless chance(0.06);
	my $n = 10_000 + int(rand(50_000));
	return 'x' x $n if chance(0.3);
	return join('', map { sprintf('%08x', int(rand(4294967296))) } 1 .. int($n / 8));
}

sub sql_quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub sql_lit
{
	my ($v, $type) = @_;
	return 'NULL' unless defined $v;
	return sql_quote($v) . "::$type";
}

# COPY text format
sub copy_field
{
	my ($v) = @_;
	return '\N' unless defined $v;
	$v =~ s/\\/\\\\/g;
	$v =~ s/\t/\\t/g;
	$v =~ s/\n/\\n/g;
	$v =~ s/\r/\\r/g;
	return $v;
}

############################################################################
# The watched tables
############################################################################

# Keys are drawn so that a hot handful is hit often (contention, deadlocks,
# reads racing writes) and the rest spreads over a few hundred rows.
sub key_int { return [ chance(0.3) ? 1 + int(rand(12)) : 1 + int(rand(300)) ]; }

my @ORGS = ('plain', 'a:b', '{x}', 'y}', '{', '100%', '%3A', 'with space', ' lead', 'x y:z{1}%', 'ü:☃');
sub key_comp { return chance(0.3) ? [ 'a:b', 1 + int(rand(3)) ] : [ pick(@ORGS), 1 + int(rand(20)) ]; }

my @TEXT_TEMPLATES = ('k%d', 'k:%d', '{k%d}', '%d%%', 'key %d', '%%7B%d', 'a:b{%d}%%c d', ' lead%d',
	'trail%d ', 'ünï%d☃', 'x}{%d', ':%d:', "quote'd %d", 'back\\slash%d');
my @TEXT_KEYS = map { sprintf($TEXT_TEMPLATES[ $_ % @TEXT_TEMPLATES ], $_) } 1 .. 200;
sub key_text { return [ chance(0.3) ? $TEXT_KEYS[ int(rand(8)) ] : pick(@TEXT_KEYS) ]; }

# The partitioned tables: keys (id, bucket), bucket 0 to 39 (the
# partition key, in the primary key as PostgreSQL requires).  A hot
# handful in a few buckets, one in each range of ten.
sub key_part
{
	return chance(0.3) ? [ 1 + int(rand(6)), pick(3, 15, 25, 35) ] : [ 1 + int(rand(120)), int(rand(40)) ];
}

# The partitions the writers write to directly, by name, with the buckets
# they hold (a hash partition takes only half the ids: the other half
# fails its partition constraint, as does a name that a fault detached,
# dropped or has not created yet: both errors are expected).  The names
# are fixed per range of ten (see WtcacheFuzz::Faults, part_*).
my %PART_DIRECT = (
	fz_part => [ [ fz_part_b0 => 0, 10 ], [ fz_part_b10_h0 => 10, 20 ], [ fz_part_b10_h1 => 10, 20 ],
		[ fz_part_b20 => 20, 30 ], [ fz_part_b30 => 30, 40 ], [ fz_part_def => 20, 40 ] ],
	fz_pl => [ [ fz_pl_b0 => 0, 10 ], [ fz_pl_b10 => 10, 20 ], [ fz_pl_b20 => 20, 30 ], [ fz_pl_b30 => 30, 40 ] ],
);
sub part_tables { return sort keys %PART_DIRECT; }
# The ranges of ten the faults create partitions of (the workload's);
# beyond them, ranges no row of the writers reaches.
sub part_slots { return (0, 10, 20, 30); }

# Every table has inc and ver, kept by the trigger fz_track_<table>
# (see below): inc names one incarnation of a row (an INSERT, or the row
# an UPDATE of the key moves to), ver counts the updates of it.
my %TBL = (
	fz_int => {
		keycols => ['id'],
		keytypes => ['int'],
		key => \&key_int,
		cols => [
			[ name => 'text', \&g_text ],
			[ qty => 'int', \&g_int ],
			[ price => 'numeric', \&g_numeric ],
			[ tags => 'int[]', \&g_intarr ],
			[ doc => 'jsonb', \&g_json ],
			[ at => 'timestamptz', \&g_ts ],
			[ big => 'text', \&g_big ],
		],
	},
	# watched with a key template (keys wtc:comp:<org>:n:<n>, values
	# escaped): WtcacheFuzz::Checks builds its keys itself
	fz_comp => {
		keycols => [ 'org', 'n' ],
		keytypes => [ 'text', 'int' ],
		key => \&key_comp,
		key_template => 'comp:{org}:n:{n}',
		cols => [
			[ v => 'text', \&g_text ],
			[ note => 'text', \&g_big ],
			[ amount => 'numeric', \&g_numeric ],
			[ at => 'timestamptz', \&g_ts ],
		],
	},
	fz_text => {
		keycols => ['k'],
		keytypes => ['text'],
		key => \&key_text,
		cols => [
			[ payload => 'jsonb', \&g_json ],
			[ amount => 'numeric', \&g_numeric ],
			[ at => 'timestamptz', \&g_ts ],
			[ tags => 'int[]', \&g_intarr ],
			[ big => 'text', \&g_big ],
		],
	},
	fz_inv => {
		keycols => ['id'],
		keytypes => ['int'],
		key => \&key_int,
		mode => 'invalidate',
		cols => [
			[ v => 'text', \&g_text ],
			[ doc => 'jsonb', \&g_json ],
			[ at => 'timestamptz', \&g_ts ],
			[ qty => 'int', \&g_int ],
		],
	},
	# watched with format => 'hash' and a projection: a Redis hash per row,
	# a field per column but secret (WtcacheFuzz::Checks compares them)
	fz_hash => {
		keycols => ['id'],
		keytypes => ['int'],
		key => \&key_int,
		format => 'hash',
		exclude => ['secret'],
		cols => [
			[ name => 'text', \&g_text ],
			[ qty => 'int', \&g_int ],
			[ price => 'numeric', \&g_numeric ],
			[ tags => 'int[]', \&g_intarr ],
			[ doc => 'jsonb', \&g_json ],
			[ at => 'timestamptz', \&g_ts ],
			[ secret => 'text', \&g_text ],
		],
	},
	# range-partitioned by bucket: [0,10) plain, [10,20) hash-partitioned
	# by id in two, a default for the rest (and the partitions the faults
	# create, attach, detach, drop and truncate)
	fz_part => {
		keycols => [ 'id', 'bucket' ],
		keytypes => [ 'int', 'int' ],
		key => \&key_part,
		part => 1,
		cols => [
			[ v => 'text', \&g_text ],
			[ qty => 'int', \&g_int ],
			[ doc => 'jsonb', \&g_json ],
			[ at => 'timestamptz', \&g_ts ],
		],
	},
	# range-partitioned, no default (DETACH ... CONCURRENTLY needs that):
	# a bucket whose partition is detached has no place to go
	fz_pl => {
		keycols => [ 'id', 'bucket' ],
		keytypes => [ 'int', 'int' ],
		key => \&key_part,
		part => 1,
		cols => [
			[ v => 'text', \&g_text ],
			[ qty => 'int', \&g_int ],
			[ amount => 'numeric', \&g_numeric ],
		],
	},
);
my @TNAMES = qw(fz_int fz_comp fz_text fz_inv fz_part fz_pl fz_hash);
my @WRITE_THROUGH = grep { !$TBL{$_}{mode} } @TNAMES;

# The definitions are read, never changed: the test and the sessions see
# them through these.
sub fuzz_table { return $TBL{ $_[0] }; }
sub fuzz_tables { return @TNAMES; }
sub write_through_tables { return @WRITE_THROUGH; }

sub key_where
{
	my ($tn, $key, $alias) = @_;
	my $t = $TBL{$tn};
	my $p = defined $alias ? "$alias." : '';
	return join(' AND ', map { "$p$t->{keycols}[$_] = " . sql_lit($key->[$_], $t->{keytypes}[$_]) } 0 .. $#{ $t->{keycols} });
}

sub key_list_sql { return join(', ', @{ $TBL{ $_[0] }{keycols} }); }

# Distinct random keys
sub some_keys
{
	my ($tn, $n) = @_;
	my (%seen, @keys);
	for (1 .. $n * 3)
	{
		my $k = $TBL{$tn}{key}->();
		push @keys, $k unless $seen{ join("\0", @$k) }++;
		last if @keys == $n;
	}
	return @keys;
}

# A random subset of the non-key columns (at least one)
sub some_cols
{
	my ($tn) = @_;
	my @c = grep { chance(0.6) } @{ $TBL{$tn}{cols} };
	@c = (pick(@{ $TBL{$tn}{cols} })) unless @c;
	return @c;
}

# One row's VALUES list for these key values and columns
sub row_values
{
	my ($tn, $key, $cols) = @_;
	my $t = $TBL{$tn};
	return '(' . join(', ',
		(map { sql_lit($key->[$_], $t->{keytypes}[$_]) } 0 .. $#{ $t->{keycols} }),
		(map { sql_lit($_->[2]->(), $_->[1]) } @$cols)) . ')';
}

sub set_list
{
	my ($cols) = @_;
	return join(', ', map { "$_->[0] = " . sql_lit($_->[2]->(), $_->[1]) } @$cols);
}

# A WHERE clause over several rows (ranges, lists, a non-key predicate)
sub range_where
{
	my ($tn) = @_;
	my $r = rand();
	if ($tn eq 'fz_int' || $tn eq 'fz_inv' || $tn eq 'fz_hash')
	{
		my $a = 1 + int(rand(300));
		return "id BETWEEN $a AND " . ($a + int(rand(15))) if $r < 0.7;
		return "qty % 7 = " . int(rand(7)) . " AND id < " . int(rand(300)) if $r < 0.9;
		return "id IN (" . join(', ', map { $_->[0] } some_keys($tn, 5)) . ")";
	}
	if ($TBL{$tn}{part})
	{
		my $a = 1 + int(rand(120));
		return "id BETWEEN $a AND " . ($a + int(rand(10))) if $r < 0.5;
		my $b = int(rand(40));
		return "bucket BETWEEN $b AND " . ($b + int(rand(4))) . " AND id < " . int(rand(60)) if $r < 0.8;
		return "(id, bucket) IN (" . join(', ', map { "($_->[0], $_->[1])" } some_keys($tn, 4)) . ")";
	}
	if ($tn eq 'fz_comp')
	{
		my $org = sql_quote(pick(@ORGS));
		my $a = 1 + int(rand(20));
		return "org = $org AND n BETWEEN $a AND " . ($a + int(rand(6))) if $r < 0.7;
		return "org IN ($org, " . sql_quote(pick(@ORGS)) . ") AND n < " . int(rand(8)) if $r < 0.9;
		return "(org, n) IN (" . join(', ', map { '(' . sql_quote($_->[0]) . ", $_->[1])" } some_keys($tn, 4)) . ")";
	}
	return "k IN (" . join(', ', map { sql_quote($_->[0]) } some_keys($tn, 2 + int(rand(8)))) . ")" if $r < 0.8;
	return "k LIKE " . sql_quote(pick('k%', '%:%', '{%', '%\\%%', '% %'));
}

# SET clause of an UPDATE of several rows: new values, or arithmetic on
# what is there (NULL, NaN and Infinity included).
sub range_set
{
	my ($tn) = @_;
	my @c = some_cols($tn);
	return set_list(\@c) if chance(0.5);
	return 'qty = coalesce(qty, 0) + 1' if $tn eq 'fz_int' || $tn eq 'fz_inv' || $tn eq 'fz_hash' || $TBL{$tn}{part};
	return 'amount = amount + 1.5, at = at + interval \'1 day\'';
}

############################################################################
# Statements.  A statement is a list of steps; a step is SQL text, or a
# COPY: { copy => $table, cols => [...], rows => [[...], ...] }, sent as
# \copy from a file.  A failing step fails the statement.
############################################################################

sub st_insert
{
	my ($tn, $nrows) = @_;
	my @cols = some_cols($tn);
	my @keys = some_keys($tn, $nrows);
	# Half the keys exist: without ON CONFLICT many inserts fail (and roll
	# their transaction back, which is worth testing too, up to a point).
	return "INSERT INTO $tn (" . join(', ', key_list_sql($tn), map { $_->[0] } @cols) . ") VALUES "
	  . join(', ', map { row_values($tn, $_, \@cols) } @keys) . (chance(0.4) ? ' ON CONFLICT DO NOTHING;' : ';');
}

sub st_insert_select
{
	my ($tn) = @_;
	my $a = 1 + int(rand(300));
	my $b = $a + int(rand(40));
	my $conflict = chance(0.7) ? ' ON CONFLICT DO NOTHING' : '';
	my $ts = "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'";
	return "INSERT INTO fz_int (id, name, qty, at, tags) SELECT g, 'gen ' || g, g % 13, $ts, ARRAY[g, -g] FROM generate_series($a, $b) g$conflict;"
	  if $tn eq 'fz_int';
	return "INSERT INTO fz_inv (id, v, qty, at) SELECT g, 'gen:' || g, g % 13, $ts FROM generate_series($a, $b) g$conflict;"
	  if $tn eq 'fz_inv';
	return "INSERT INTO fz_hash (id, name, qty, price, at, secret) SELECT g, 'gen ' || g, g % 13, g / 7.0, $ts, 'secret ' || g "
	  . "FROM generate_series($a, $b) g$conflict;"
	  if $tn eq 'fz_hash';
	return "INSERT INTO $tn (id, bucket, v, qty) SELECT g, (g * 7) % 40, 'gen ' || g, g % 13 FROM generate_series($a % 120, $a % 120 + "
	  . int(rand(30)) . ") g$conflict;"
	  if $TBL{$tn}{part};
	return "INSERT INTO fz_comp (org, n, v, amount) SELECT " . sql_quote(pick(@ORGS))
	  . ", g, 'gen ' || g, g / 7.0 FROM generate_series(1, " . int(rand(25)) . ") g$conflict;"
	  if $tn eq 'fz_comp';
	return "INSERT INTO fz_text (k, payload, amount) SELECT 'g:' || g || ' {x}%', jsonb_build_object('g', g, 'k:', '{}'), g FROM generate_series($a % 60, $a % 60 + "
	  . int(rand(10)) . ") g$conflict;";
}

sub st_upsert
{
	my ($tn) = @_;
	my @cols = some_cols($tn);
	my @keys = some_keys($tn, 1 + int(rand(4)));
	my $ins = "INSERT INTO $tn AS t (" . join(', ', key_list_sql($tn), map { $_->[0] } @cols) . ") VALUES "
	  . join(', ', map { row_values($tn, $_, \@cols) } @keys) . " ON CONFLICT (" . key_list_sql($tn) . ")";
	return "$ins DO NOTHING;" if chance(0.2);
	my @set = map { chance(0.7) ? "$_->[0] = EXCLUDED.$_->[0]" : "$_->[0] = t.$_->[0]" } @cols;
	my $where = chance(0.2) ? ' WHERE t.ver % 2 = 0' : '';    # a conditional upsert
	return "$ins DO UPDATE SET " . join(', ', @set) . "$where;";
}

sub st_update_key
{
	my ($tn) = @_;
	my ($old) = $TBL{$tn}{key}->();
	if ($tn eq 'fz_int' || $tn eq 'fz_inv' || $tn eq 'fz_hash')
	{
		return "UPDATE $tn SET id = " . key_int()->[0] . " WHERE id = $old->[0];" if chance(0.6);
		my $a = 1 + int(rand(300));
		my $d = pick(1, -1, 7, -13, 50, -50);
		return "UPDATE $tn SET id = id + ($d) WHERE id BETWEEN $a AND " . ($a + int(rand(8))) . ';';
	}
	if ($TBL{$tn}{part})
	{
		# a new bucket moves the row to another partition (or fails: a
		# bucket without one, a duplicate key)
		my $r = rand();
		return "UPDATE $tn SET bucket = " . int(rand(40)) . " WHERE " . key_where($tn, $old) . ';' if $r < 0.5;
		my $a = 1 + int(rand(120));
		return "UPDATE $tn SET bucket = (bucket + " . pick(1, 10, 17, 30) . ") % 40 WHERE id BETWEEN $a AND " . ($a + int(rand(6))) . ';'
		  if $r < 0.8;
		return "UPDATE $tn SET id = id + " . pick(1, -1, 50) . " WHERE " . key_where($tn, $old) . ';';
	}
	if ($tn eq 'fz_comp')
	{
		return "UPDATE fz_comp SET org = " . sql_quote(pick(@ORGS)) . " WHERE " . key_where($tn, $old) . ';' if chance(0.5);
		return "UPDATE fz_comp SET n = n + " . pick(1, 3, 20, -1) . " WHERE org = " . sql_quote($old->[0])
		  . " AND n BETWEEN $old->[1] AND " . ($old->[1] + int(rand(4))) . ';';
	}
	return "UPDATE fz_text SET k = " . sql_quote(key_text()->[0]) . ", amount = 1 WHERE " . key_where($tn, $old) . ';';
}

sub st_copy
{
	my ($tn, $in_txn) = @_;
	my @cols = some_cols($tn);
	my @keys = some_keys($tn, 2 + int(rand(18)));
	my $t = $TBL{$tn};
	my @rows = map { my $k = $_; [ @$k, map { $_->[2]->() } @cols ] } @keys;
	my @steps;
	# Replace the rows by a COPY, as a batch load does; without the DELETE
	# the COPY often fails on a duplicate key (and rolls back whole).
	push @steps, "DELETE FROM $tn WHERE (" . key_list_sql($tn) . ") IN ("
	  . join(', ', map { my $k = $_; '(' . join(', ', map { sql_lit($k->[$_], $t->{keytypes}[$_]) } 0 .. $#$k) . ')' } @keys) . ');'
	  if chance(0.8);
	push @steps, { copy => $tn, cols => [ @{ $t->{keycols} }, map { $_->[0] } @cols ], rows => \@rows };
	return @steps;
}

# A data-modifying CTE that moves a row from one watched table to another:
# one statement, two tables.
sub st_move_row
{
	my ($id) = @{ key_int() };
	return "WITH d AS (DELETE FROM fz_int WHERE id = $id RETURNING id, name, doc, at, qty) "
	  . "INSERT INTO fz_inv AS t (id, v, doc, at, qty) SELECT id, name, doc, at, qty FROM d "
	  . "ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, doc = EXCLUDED.doc;";
}

# A statement on one partition, named: a row of its buckets inserted,
# updated (its bucket changed within the partition, or out of it, which
# PostgreSQL refuses on a partition), deleted, or a few rows updated.
sub st_part_direct
{
	my ($tn) = @_;
	$tn = pick(part_tables()) unless $TBL{$tn}{part};
	my ($name, $lo, $hi) = @{ pick(@{ $PART_DIRECT{$tn} }) };
	my $key = [ $TBL{$tn}{key}->()->[0], $lo + int(rand($hi - $lo)) ];
	my @cols = some_cols($tn);
	my $r = rand();
	return "INSERT INTO $name (id, bucket, " . join(', ', map { $_->[0] } @cols) . ") VALUES " . row_values($tn, $key, \@cols)
	  . (chance(0.5) ? ' ON CONFLICT DO NOTHING;' : ';') if $r < 0.35;
	return "UPDATE $name SET " . set_list(\@cols) . " WHERE " . key_where($tn, $key) . ';' if $r < 0.6;
	return "UPDATE $name SET bucket = " . ($lo + int(rand($hi - $lo))) . " WHERE " . key_where($tn, $key) . ';' if $r < 0.7;
	return "UPDATE $name SET bucket = bucket + 10 WHERE " . key_where($tn, $key) . ';' if $r < 0.75;
	return "DELETE FROM $name WHERE " . key_where($tn, $key) . ';' if $r < 0.9;
	return "UPDATE $name SET qty = coalesce(qty, 0) + 1 WHERE id < " . int(rand(40)) . ';';
}

my @KINDS = (
	[ insert1 => 10, sub { st_insert($_[0], 1) } ],
	[ insertN => 6, sub { st_insert($_[0], 2 + int(rand(5))) } ],
	[ insert_select => 3, sub { st_insert_select($_[0]) } ],
	[ upsert => 8, sub { st_upsert($_[0]) } ],
	[ update1 => 14, sub { "UPDATE $_[0] SET " . set_list([ some_cols($_[0]) ]) . " WHERE " . key_where($_[0], $TBL{ $_[0] }{key}->()) . ';' } ],
	[ update_noop => 2, sub { my @c = some_cols($_[0]); "UPDATE $_[0] SET $c[0][0] = $c[0][0] WHERE " . key_where($_[0], $TBL{ $_[0] }{key}->()) . ';' } ],
	[ update_range => 6, sub { "UPDATE $_[0] SET " . range_set($_[0]) . " WHERE " . range_where($_[0]) . ';' } ],
	[ update_key => 6, sub { st_update_key($_[0]) } ],
	[ delete1 => 8, sub { "DELETE FROM $_[0] WHERE " . key_where($_[0], $TBL{ $_[0] }{key}->()) . ';' } ],
	[ delete_range => 3, sub { "DELETE FROM $_[0] WHERE " . range_where($_[0]) . ';' } ],
	[ lock_rows => 2, sub { "SELECT count(*) FROM (SELECT 1 FROM $_[0] WHERE " . range_where($_[0]) . " FOR " . pick('UPDATE', 'NO KEY UPDATE', 'SHARE') . ") s;" } ],
	[ copy => 3, sub { st_copy($_[0]) } ],
	[ move_row => 2, sub { st_move_row() } ],
	[ truncate => 0.1, sub { "TRUNCATE $_[0];" } ],
	[ part_direct => 5, sub { st_part_direct($_[0]) } ],
);
my $KIND_TOTAL = 0;
$KIND_TOTAL += $_->[1] for @KINDS;

sub random_statement
{
	my $r = rand($KIND_TOTAL);
	for my $k (@KINDS)
	{
		if (($r -= $k->[1]) < 0)
		{
			my $tn = pick(@TNAMES);
			return ($k->[0], $k->[2]->($tn));
		}
	}
	return ('update1', "UPDATE fz_int SET qty = 1 WHERE id = 1;");
}

# The first rows of a table: $n rows with every column set (the writers'
# statements set a random subset).
sub initial_rows
{
	my ($tn, $n) = @_;
	my $t = $TBL{$tn};
	my @cols = @{ $t->{cols} };
	my @keys = some_keys($tn, $n);
	return "INSERT INTO $tn (" . join(', ', @{ $t->{keycols} }, map { $_->[0] } @cols) . ") VALUES "
	  . join(', ', map { row_values($tn, $_, \@cols) } @keys) . " ON CONFLICT DO NOTHING;";
}

1;
