#!/usr/bin/env bash
# Runs the benchmark workloads against Once and its peers on this machine and writes the results:
#   docs/bench/results.tsv   every row (median of $RUNS runs), with the exact command that made it
#   docs/bench/results.md    the same as markdown tables, commands listed below each table
#   docs/bench/produce.svg   the plot (gnuplot): MB/s of acks=all produce per system, and the limits
#
# Installs what it needs (Debian packages: redis-server, postgresql-15, nats-server, gnuplot-nox;
# Tansu with `cargo install` into $PEERS_DIR, outside the repository), starts each server with its
# durability settings on a data directory under $WORK, runs `once bench --workload …` against it,
# stops it and deletes its data. Not a test: it takes 20–40 minutes and writes several GB.
#
#   scripts/bench/peers.sh                 # everything
#   PHASES="limits once redis" scripts/bench/peers.sh   # some of it
#   SMOKE=1 scripts/bench/peers.sh         # seconds per phase, to check the script itself
#
# Environment: RUNS (3), RECORDS (200000), SLOW_RECORDS (20000: one-row-per-commit PostgreSQL),
# TANSU_RECORDS (100000), BACKLOG_BYTES (2000000000), PHASES, WORK (/tmp/once-bench-peers), PEERS_DIR
# (~/.cache/once-peers), OUT (docs/bench), APPEND (1: add to the existing results instead of
# starting them anew), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-3}
RECORDS=${RECORDS:-200000}
SLOW_RECORDS=${SLOW_RECORDS:-20000}
TANSU_RECORDS=${TANSU_RECORDS:-100000}
BACKLOG_BYTES=${BACKLOG_BYTES:-2000000000}
PHASES=${PHASES:-"limits once redis postgres nats tansu catch-up restart report"}
WORK=${WORK:-/tmp/once-bench-peers}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/once-peers}
OUT=${OUT:-$ROOT/docs/bench}
TANSU_VERSION=0.6.0
SMOKE_FLAG=()
if [[ ${SMOKE:-0} == 1 ]]; then
    SMOKE_FLAG=(--smoke)
    RUNS=1
fi

# Ports on loopback only, away from the defaults so a developer's own servers are not disturbed.
ONCE_ADDR=127.0.0.1:19801
REDIS_PORT=16379
PG_PORT=15432
NATS_PORT=14222
TANSU_ADDR=127.0.0.1:19802

log() { printf '\n== %s\n' "$*" >&2; }
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

install() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server redis-tools)
    [[ -x /usr/lib/postgresql/15/bin/postgres ]] || missing+=(postgresql-15)
    command -v nats-server >/dev/null || missing+=(nats-server)
    command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if has_phase tansu && [[ ! -x $PEERS_DIR/tansu/bin/tansu ]]; then
        # Tansu has no storage engine by default; see phase_tansu for the choice of libSQL. Built in
        # its own target directory, outside the repository, and that directory removed afterwards.
        log "cargo install tansu $TANSU_VERSION (features libsql) into $PEERS_DIR/tansu (about 15 minutes on 2 cores)"
        CARGO_TARGET_DIR=$PEERS_DIR/tansu-target cargo install tansu --version "$TANSU_VERSION" --locked \
            --features libsql --root "$PEERS_DIR/tansu"
        rm -rf "$PEERS_DIR/tansu-target"
    fi
    log "building once"
    (cd "$ROOT" && cargo build --release -p once-cli)
    ONCE=${CARGO_TARGET_DIR:-$ROOT/target}/release/once
}

# Every process this script starts is remembered and stopped by its pid on exit.
STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

wait_port() {
    local port=$1
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $port after 60 s" >&2
    return 1
}

bench() {
    # The command is printed, and `once bench` records its own command line in every row.
    echo "+ once bench $*" >&2
    "$ONCE" bench "${SMOKE_FLAG[@]}" --runs "$RUNS" --tsv "$OUT/results.tsv" "$@" >>"$OUT/results.md"
}

start_once() {
    mkdir -p "$WORK/once"
    "$ONCE" serve --listen "$ONCE_ADDR" --data-dir "$WORK/once/data" >"$WORK/once/log" 2>&1 &
    ONCE_PID=$!
    STARTED+=("$ONCE_PID")
    wait_port "${ONCE_ADDR##*:}"
}

phase_limits() {
    log "W0: loopback TCP and raw append+fdatasync"
    mkdir -p "$WORK/limits"
    bench --workload limits --data-dir "$WORK/limits"
    rm -rf "$WORK/limits"
}

phase_once() {
    log "W1/W2: Once"
    start_once
    bench --workload matrix --bootstrap "$ONCE_ADDR" --broker-pid "$ONCE_PID" --records "$RECORDS"
    # librdkafka's idempotent producer keeps one Produce request in flight per partition (see
    # docs/benchmarks.md, "Profiles"); plain producers limited the same way show what idempotence
    # itself costs the broker.
    bench --workload matrix --bootstrap "$ONCE_ADDR" --broker-pid "$ONCE_PID" --records "$RECORDS" \
        --no-idempotent --max-in-flight-requests 1
    stop "$ONCE_PID"
    rm -rf "$WORK/once"
}

phase_redis() {
    log "Redis streams, appendfsync always"
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes \
        --appendfsync always --save '' --daemonize no --logfile "$WORK/redis/log" &
    local pid=$!
    STARTED+=("$pid")
    wait_port "$REDIS_PORT"
    for bytes in 1024 100; do
        bench --workload redis --bootstrap "127.0.0.1:$REDIS_PORT" --broker-pid "$pid" \
            --records "$RECORDS" --record-bytes "$bytes"
    done
    stop "$pid"
    rm -rf "$WORK/redis"
}

# PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
start_postgres() {
    mkdir -p "$WORK/pg"
    chown postgres: "$WORK/pg"
    runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$WORK/pg/data" -A trust -U postgres >/dev/null
    runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres -D "$WORK/pg/data" -p "$PG_PORT" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories="$WORK/pg" \
        -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
        -c shared_buffers=256MB -c max_wal_size=4GB >"$WORK/pg/log" 2>&1 &
    PG_PID=$!
    STARTED+=("$PG_PID")
    wait_port "$PG_PORT"
    sleep 1
}

phase_postgres() {
    log "PostgreSQL 15, INSERT … ON CONFLICT DO NOTHING, synchronous_commit on"
    start_postgres
    for bytes in 1024 100; do
        # One row per statement (= per transaction, per commit), like one message per ack. A
        # session runs its statements one after another, so a deeper pipeline only queues; 16
        # sessions with one statement each let PostgreSQL share WAL flushes between them.
        bench --workload postgres --bootstrap "127.0.0.1:$PG_PORT" --broker-pid "$PG_PID" \
            --records "$SLOW_RECORDS" --record-bytes "$bytes" --producers 16 --in-flight 1
        # 100 rows per statement: an application batching like a Kafka client does.
        bench --workload postgres --bootstrap "127.0.0.1:$PG_PORT" --broker-pid "$PG_PID" \
            --records "$RECORDS" --record-bytes "$bytes" --rows-per-request 100 --in-flight 16
    done
    stop "$PG_PID"
    rm -rf "$WORK/pg"
}

phase_nats() {
    log "NATS JetStream, file store (acks before fsync)"
    mkdir -p "$WORK/nats"
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    wait_port "$NATS_PORT"
    for bytes in 1024 100; do
        bench --workload nats --bootstrap "127.0.0.1:$NATS_PORT" --broker-pid "$pid" \
            --records "$RECORDS" --record-bytes "$bytes"
    done
    stop "$pid"
    rm -rf "$WORK/nats" "$WORK/nats.log"
}

# Tansu's durable engine is PostgreSQL, but its schema ships only in Tansu's source repository
# (etc/initdb.d), not in the crate, and this script installs from package registries only; so
# Tansu runs on its SQLite (libSQL) engine, which creates its own schema. That engine runs in WAL
# mode with synchronous=NORMAL: commits are not fsynced (an strace of one smoke run saw 6 fsyncs,
# all at checkpoints, for 5,000 acknowledged records), so its rows say "acks before fsync".
phase_tansu() {
    log "Tansu $TANSU_VERSION, SQLite storage (acks before fsync)"
    mkdir -p "$WORK/tansu"
    # The SQLite file is created relative to the working directory.
    (cd "$WORK/tansu" && exec "$PEERS_DIR/tansu/bin/tansu" broker --silent --storage-engine sqlite://tansu.db \
        --listener-url "tcp://$TANSU_ADDR" --advertised-listener-url "tcp://$TANSU_ADDR" >log 2>&1) &
    local pid=$!
    STARTED+=("$pid")
    wait_port "${TANSU_ADDR##*:}"
    bench --workload matrix --bootstrap "$TANSU_ADDR" --broker-pid "$pid" --records "$TANSU_RECORDS" \
        --system "Tansu $TANSU_VERSION (SQLite storage)" \
        --durability "acks=all; acks BEFORE fsync: SQLite WAL, synchronous=NORMAL (fsync at checkpoints)"
    stop "$pid"
    rm -rf "$WORK/tansu"
}

phase_catch_up() {
    log "W5: Once consumer catch-up from a $BACKLOG_BYTES B backlog, cold page cache"
    start_once
    bench --workload catch-up --bootstrap "$ONCE_ADDR" --broker-pid "$ONCE_PID" \
        --backlog-bytes "$BACKLOG_BYTES" --drop-caches
    stop "$ONCE_PID"
    rm -rf "$WORK/once"
}

phase_restart() {
    log "W6: Once restart after kill -9 with a $BACKLOG_BYTES B backlog"
    mkdir -p "$WORK/restart"
    bench --workload restart --bootstrap "$ONCE_ADDR" --data-dir "$WORK/restart" --backlog-bytes "$BACKLOG_BYTES"
    rm -rf "$WORK/restart"
}

# The plot: MB/s of acks=all produce, 1 KiB records, 1 partition (or the peer's single stream or
# table), one bar per system, and the W0 raw append+fdatasync limit at 600 KB writes beside them.
phase_report() {
    log "plot"
    local data=$WORK/plot.tsv
    mkdir -p "$WORK"
    awk -F'\t' 'NR > 1 && $4 == 1024 && ($1 ~ /^W1/ || $1 ~ /^W2/) && ($5 ~ /^1 partition/ || $1 ~ /peer/) {
            label = $2; sub(/ \(.*/, "", label)
            if ($1 ~ /^W2/) label = label " idempotent"
            if ($5 ~ /max.in.flight/) label = label " plain, 1 request in flight"
            if ($5 ~ /100 record/) label = label " 100 rows/commit"
            if ($3 ~ /BEFORE fsync/) label = label " (no fsync)"
            printf "\"%s\"\t%s\n", label, $7
        }
        NR > 1 && $1 == "W0 limit" && $4 == 600000 { printf "\"raw append+fdatasync 600 KB\"\t%s\n", $7 }' \
        "$OUT/results.tsv" >"$data"
    gnuplot <<EOF
set terminal svg size 900,480 font "sans,11" background "white"
set output "$OUT/produce.svg"
set title "acks=all produce, 1 KiB records, one partition/stream/table: MB/s (median of runs)"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set ylabel "MB/s of record values"
set xtics rotate by -30 left
set grid ytics
set key off
set bmargin 9
plot "$data" using 2:xtic(1) linecolor rgb "#3465a4", '' using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.7
EOF
    rm -f "$data"
}

main() {
    mkdir -p "$OUT"
    install
    if [[ ! -s $OUT/results.tsv ]] || [[ ${APPEND:-0} != 1 ]]; then
        : >"$OUT/results.tsv"
        printf '# Benchmark results\n\nWritten by scripts/bench/peers.sh on %s (RUNS=%s).\n\n' "$(date -u +%F)" "$RUNS" \
            >"$OUT/results.md"
    fi
    local phase
    for phase in $PHASES; do
        "phase_${phase//-/_}"
    done
}

main "$@"
