# The benchmark's TLS figures (sourced by test/bench.sh; BENCH_TLS=0 skips
# them): the drain of an UPDATE of every pgbench_accounts row and the rate
# of wtcache.get() of one key, over TLS next to plain TCP, alternated in
# the same run.  The benchmark's Redis gets a TLS port next to its plain
# one (CONFIG SET, with a certificate made here by openssl) and
# wtcache.redis_url switches between redis:// and rediss://, so both
# measure one Redis holding the same data (the generation marker stays,
# nothing is resynced).  Ends on redis:// with the capture trigger
# disabled, as it found them.  Needs servers.sh, PSQL, RUNS, ROWS, WORK, REDISPORT, capture_with,
# delivered, pgbench_tps, tps_times, read_counts and read_share from the
# caller.

# A CA and a certificate for 127.0.0.1; the Redis listens with it on
# TLSPORT, and wtcache trusts the CA.
tls_setup() {
    local d=$WORK/tls newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    mkdir -p "$d"
    {
        openssl req -x509 "${newkey[@]}" -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 \
            -subj /CN=wtcache-bench-ca
        openssl req "${newkey[@]}" -keyout "$d/srv.key" -out "$d/srv.csr" -subj /CN=127.0.0.1
        printf 'subjectAltName=IP:127.0.0.1\n' > "$d/srv.ext"
        openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
            -out "$d/srv.crt" -days 2 -extfile "$d/srv.ext"
    } >"$d/openssl.log" 2>&1 || { echo "bench: openssl failed, see $d/openssl.log" >&2; exit 1; }
    TLSPORT=$(free_port)
    redis-cli -p "$REDISPORT" config set tls-cert-file "$d/srv.crt" tls-key-file "$d/srv.key" \
        tls-ca-cert-file "$d/ca.crt" tls-auth-clients no tls-port "$TLSPORT" >/dev/null
    "${PSQL[@]}" -c "ALTER SYSTEM SET wtcache.redis_tls_ca_file = '$d/ca.crt'" >/dev/null
}

# wtcache.redis_url = $1; returns once the worker is connected at the
# address $2 (as wtcache.worker_status() says it)
tls_use() {
    "${PSQL[@]}" -c "ALTER SYSTEM SET wtcache.redis_url = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 400); do
        [ "$("${PSQL[@]}" -Atc "SELECT coalesce(bool_and(connected AND redis_address = '$2'), false)
                                  FROM wtcache.worker_status() WHERE pid IS NOT NULL")" = t ] && return 0
        sleep 0.05
    done
    echo "bench: the worker did not connect to $2" >&2
    exit 1
}

# changes/s from the commit of an UPDATE of every row to wtcache.wait()
tls_drain() {
    local ms
    delivered
    "${PSQL[@]}" -c "VACUUM pgbench_accounts" -c "CHECKPOINT" >/dev/null
    "${PSQL[@]}" -c "UPDATE pgbench_accounts SET abalance = abalance + 1" >/dev/null
    ms=$("${PSQL[@]}" -c '\timing on' -c "SELECT wtcache.wait('600s')" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    awk -v r="$ROWS" -v ms="$ms" 'BEGIN {printf "%.0f", r / (ms / 1000)}'
}

# fills drain_tcp, drain_tls, get_tcp, get_tls (one value a run each)
tls_runs() {
    local run before hits_tcp hits_tls plain_addr="127.0.0.1:$REDISPORT"
    tls_setup
    capture_with wtcache_capture_upd
    drain_tcp=(); drain_tls=(); get_tcp=(); get_tls=()
    for run in $(seq "$RUNS"); do
        tls_use "redis://$plain_addr" "$plain_addr"
        drain_tcp+=("$(tls_drain)")
        before=$(read_counts)
        get_tcp+=("$(tps_times "$(pgbench_tps "$WORK/get.sql")" 1)")
        hits_tcp=$(read_share "$before" 1)

        tls_use "rediss://127.0.0.1:$TLSPORT" "127.0.0.1:$TLSPORT (TLS)"
        drain_tls+=("$(tls_drain)")
        before=$(read_counts)
        get_tls+=("$(tps_times "$(pgbench_tps "$WORK/get.sql")" 1)")
        hits_tls=$(read_share "$before" 1)
        echo "run $run: drain over TCP ${drain_tcp[-1]}/s, over TLS ${drain_tls[-1]}/s;" \
             "get over TCP ${get_tcp[-1]}/s ($hits_tcp% hits), over TLS ${get_tls[-1]}/s ($hits_tls% hits)"
    done
    tls_use "redis://$plain_addr" "$plain_addr"
    delivered
    # capture stays on, as the cached reads before left it: disabling it
    # would hold the table, and the next section's wait() would say so
}
