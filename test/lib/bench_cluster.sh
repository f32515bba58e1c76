# The benchmark's Redis Cluster figure (sourced by test/bench.sh): the
# drain of an UPDATE of every pgbench_accounts row into a 3-master Redis
# Cluster on loopback, by a PostgreSQL of its own with the same settings
# and data as the single-Redis runs, so the two drains can be set side by
# side.  Needs servers.sh, PSQL, SCALE, RUNS and WORK from the caller.

# start_redis_cluster DIR: three masters on free ports, joined by
# redis-cli; CLUSTER_SEED gets "host:port" of the first.  Not in a
# subshell: servers_stop_all must see their PIDs.
start_redis_cluster() {
    local dir=$1 port addrs=() i
    for i in 1 2 3; do
        # the bus port is chosen too: port + 10000 may be taken or not exist
        port=$(free_port)
        start_redis "$dir/$i" "$port" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --cluster-port "$(free_port)"
        addrs+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
        >"$dir/create.log" 2>&1
    for _ in $(seq 100); do
        redis-cli -p "${addrs[0]#*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
        sleep 0.1
    done
    CLUSTER_SEED=${addrs[0]}
    CLUSTER_PORTS=("${addrs[@]#*:}")
}

# cluster_drain_runs: fills the arrays drain_cluster (changes/s per run)
# and redis_row_ns_cluster (CPU ns a row, all masters together); needs
# redis_cpu_us and per_row.
cluster_drain_runs() {
    local seed port ms run rc0
    start_redis_cluster "$WORK/cluster"
    seed=$CLUSTER_SEED
    port=$(free_port)
    start_pg "$WORK/pgc" "$port" \
        "shared_preload_libraries = 'wtcache'" \
        "wtcache.redis_cluster_nodes = '$seed'" \
        "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
        "autovacuum = off"
    PGPORT=$port pgbench -i -q -s "$SCALE" >/dev/null 2>&1
    PGPORT=$port "${PSQL[@]}" -c "CREATE EXTENSION wtcache" \
        -c "SELECT FROM wtcache.watch('pgbench_accounts')" \
        -c "SELECT wtcache.wait('600s')" >/dev/null
    drain_cluster=(); redis_row_ns_cluster=()
    for run in $(seq "$RUNS"); do
        PGPORT=$port "${PSQL[@]}" -c "VACUUM pgbench_accounts" -c "CHECKPOINT"
        rc0=$(redis_cpu_us "${CLUSTER_PORTS[@]}")
        PGPORT=$port "${PSQL[@]}" -c "UPDATE pgbench_accounts SET abalance = abalance + 1"
        ms=$(PGPORT=$port "${PSQL[@]}" -c '\timing on' -c "SELECT wtcache.wait('600s')" \
             | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        drain_cluster+=("$(awk -v r="$ROWS" -v ms="$ms" 'BEGIN {printf "%.0f", r / (ms / 1000)}')")
        redis_row_ns_cluster+=("$(per_row "$rc0" "$(redis_cpu_us "${CLUSTER_PORTS[@]}")")")
        echo "cluster run $run: drain ${drain_cluster[-1]}/s, Redis CPU ${redis_row_ns_cluster[-1]} ns a row (3 masters)"
    done
    pg_ctl -D "$WORK/pgc" -m fast -w stop >/dev/null
}
