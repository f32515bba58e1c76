# WtcacheFuzz::Checks: comparisons of the consistency fuzzer's end state
# (test/t/014_fuzz.pl) that are more than a call of WtcacheTest's
# compare_table().
package WtcacheFuzz::Checks;

use strict;
use warnings;

use Exporter 'import';
use MIME::Base64 qw(decode_base64);

use WtcacheFuzz::Generate qw(fuzz_table);
use WtcacheTest;

our @EXPORT = qw(compare_present_keys compare_fuzz_table log_after_fault);

# A write-through table against Redis, key for key: compare_table, or for
# a table watched with format 'hash' compare_hash_table over the columns
# its projection keeps (every column but those in 'exclude').  The tables
# the fuzzer does not define (fz_own, fz_drop) are JSON.
sub compare_fuzz_table
{
	my ($node, $db, $rp, $tn) = @_;
	my $t = fuzz_table($tn);
	return compare_templated_table($node, $db, $rp, $tn) if $t && $t->{key_template};
	return compare_table($node, $db, $tn, $rp) unless $t && ($t->{format} // 'json') eq 'hash';
	my %out = map { $_ => 1 } @{ $t->{exclude} // [] };
	my @cols = grep { !$out{$_} } (@{ $t->{keycols} }, 'inc', 'ver', map { $_->[0] } @{ $t->{cols} });
	return compare_hash_table($node, $db, $tn, $rp, columns => \@cols);
}

# A table with a key template (fz_comp's 'comp:{org}:n:{n}'), its keys
# rendered here from the row, as the README says: the prefix, the literal
# text, each value with % : { } escaped as %XX; no other key of the
# template's shape (values hold no ":") in Redis.
sub compare_templated_table
{
	my ($node, $db, $rp, $tn) = @_;
	my $t = fuzz_table($tn);
	my $prefix = $node->safe_psql($db, q{SHOW wtcache.key_prefix});
	my $esc = sub {
		"replace(replace(replace(replace(($_[0])::text, '%', '%25'), ':', '%3A'), '{', '%7B'), '}', '%7D')";
	};
	my @parts = split /(\{[^}]*\})/, $t->{key_template};
	my $key_sql = join(' || ', "'$prefix'", map {
		/^\{(.*)\}$/ ? $esc->("wtc_cmp_row__.$1") : "'$_'"
	} grep { $_ ne '' } @parts);
	(my $head = $parts[0]) =~ s/([\\*?\[\]])/\\$1/g;
	my $shape = join('', map { /^\{.*\}$/ ? '[^:{}]*' : quotemeta($_) } grep { $_ ne '' } @parts);
	my $re = qr/^\Q$prefix\E$shape$/;
	return compare_table($node, $db, $tn, $rp, key_sql => $key_sql,
		pattern => glob_escape($prefix) . "$head*",
		scan => sub { [ grep { /$re/ } @{ redis_scan_keys($rp, $_[0]) } ] });
}

# invalidate mode: keys may be missing (a change deletes them, a read
# fills them), but a key that is there holds the row; the caller reads
# every row first so that most keys are there to compare.  Returns (keys
# compared, rows, [differences]).
sub compare_present_keys
{
	my ($node, $db, $rp, $tn) = @_;
	my $t = fuzz_table($tn);
	my $keyexpr = join(', ', map { "($_)::text" } @{ $t->{keycols} });
	my $out = $node->safe_psql($db, qq{SET TimeZone = 'UTC';
COPY (SELECT translate(encode(convert_to(wtcache.redis_key('$tn'::regclass, $keyexpr), 'UTF8'), 'base64'), E'\\n', ''),
             translate(encode(convert_to(row_to_json(r)::text, 'UTF8'), 'base64'), E'\\n', '')
      FROM $tn r) TO STDOUT;});
	my %want;
	for my $line (split /\n/, $out)
	{
		my ($k, $j) = split /\t/, $line;
		$want{ decode_base64($k) } = decode_base64($j);
	}
	my $keys = redis_row_keys($rp, table_key_pattern($node, $db, $tn));
	my @cmds;
	for (my $i = 0; $i < @$keys; $i += 500)
	{
		my $e = $i + 499 > $#$keys ? $#$keys : $i + 499;
		push @cmds, [ 'MGET', @{$keys}[ $i .. $e ] ];
	}
	my @values = map { @$_ } @{ redis_pipeline($rp, \@cmds) };
	my ($n, @diffs) = (0);
	for my $i (0 .. $#$keys)
	{
		my ($key, $value) = ($keys->[$i], $values[$i]);
		next unless defined $value;
		$n++;
		my ($v, $rest) = redis_row_version($value);
		if (!exists $want{$key}) { push @diffs, "key without a row: $key = " . substr($value, 0, 200); }
		elsif (!defined $v || '{' . $rest ne $want{$key})
		{
			push @diffs, "differs: $key\n    redis: " . substr($value, 0, 200) . "\n    table: " . substr($want{$key}, 0, 200);
		}
	}
	return ($n, scalar(keys %want), \@diffs);
}

# The part of the server log $log written from the $i-th injected fault
# ($faults->[$i], as WtcacheFuzz::Faults records it) to the next one, or
# to the end.
sub log_after_fault
{
	my ($log, $faults, $i) = @_;
	my $f = $faults->[$i];
	my $to = $i < $#$faults ? $faults->[ $i + 1 ]{log_from} : length($log);
	return substr($log, $f->{log_from}, $to - $f->{log_from});
}

1;
