# wtcache: PGXS build. `make && make install`, then `make installcheck`
# (pg_regress against a throwaway instance, then the TAP suite under test/t).

MODULE_big = wtcache
OBJS = \
	src/wtcache.o \
	src/settings.o \
	src/shmem.o \
	src/keyspace.o \
	src/keys.o \
	src/capture.o \
	src/watch.o \
	src/partition.o \
	src/rights.o \
	src/fence.o \
	src/redis.o \
	src/tls.o \
	src/cluster.o \
	src/push.o \
	src/worker.o \
	src/batch.o \
	src/durable.o \
	src/deliver.o \
	src/events.o \
	src/markers.o \
	src/replicas.o \
	src/launcher.o \
	src/ddl.o \
	src/pending.o \
	src/session.o \
	src/read.o \
	src/stats.o \
	src/lag.o \
	src/tags.o \
	src/query.o \
	src/narrow.o \
	src/verify.o \
	src/memory.o \
	src/audit.o \
	src/setaside.o \
	src/queue.o \
	src/plans.o \
	src/xact.o \
	src/progress.o

EXTENSION = wtcache
DATA = $(wildcard wtcache--*.sql)
PGFILEDESC = "wtcache - keeps Redis in step with PostgreSQL"

SHLIB_LINK = -lhiredis -lssl -lcrypto
PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
PG_CFLAGS = -MMD -MP

REGRESS = watch progress partition capture keys settings reads query narrow badinput security_settings metadata key_options hash_format key_template lag replicas memory_pressure audit
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check results regression.diffs regression.out $(OBJS:.o=.d)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Each object depends on the headers it included, as the compiler found
# them (-MMD in PG_CFLAGS: the .o compile, not the bitcode one), so an edit
# of one module's header rebuilds its users only, and a new header needs no
# line here.
-include $(OBJS:.o=.d)
# and on this file, whose flags they were built with (a tree built before
# -MMD has no .d files to tell it that a header changed)
$(OBJS): Makefile
