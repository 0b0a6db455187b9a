#!/usr/bin/env bash
# Where the time of one `once sink` batch goes, beside `once bench --workload sink`
# (docs/benchmarks.md, "Sink into PostgreSQL"). Two measurements, each alone on the machine:
#
#  1. The database's share: pgbench, one client, replays one batch per transaction as the sink sends
#     it — BATCH prepared INSERTs of a charge between BEGIN and COMMIT — without the fence
#     (the at-least-once baseline's transaction) and with it (the exactly-once transaction adds
#     the position row's INSERT … ON CONFLICT DO NOTHING, SELECT … FOR UPDATE and the
#     compare-and-set UPDATE). Alternated ROUNDS times, TIME seconds each, on a throw-away durable
#     cluster (fsync and synchronous_commit on).
#  2. The broker's share: the synchronous group-offset commit the baseline makes after each batch,
#     timed COMMITS times by confluent-kafka against a throw-away Once broker.
#
#   scripts/bench/sink-profile.sh                       # BATCH=500 ROUNDS=3 TIME=10 COMMITS=500
#   BATCH=100 scripts/bench/sink-profile.sh
#
# Needs the postgresql package, python3 with confluent-kafka, and target/release/once.
set -euo pipefail
cd "$(dirname "$0")/../.."

BATCH=${BATCH:-500}
ROUNDS=${ROUNDS:-3}
TIME=${TIME:-10}
COMMITS=${COMMITS:-500}
ONCE=${ONCE:-$PWD/target/release/once}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/once-sink-profile-XXXXXX)
PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER=127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${BROKER_PID:-}" ] && kill "$BROKER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"

# 1. The database's share.
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-instructions >/dev/null
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" \
  -l "$WORK/pg.log" -w start >/dev/null
psql=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1)
"${psql[@]}" -c "CREATE TABLE charges (message_id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12,2) NOT NULL);
  CREATE TABLE once_sink_offsets (sink TEXT, topic TEXT, \"partition\" INTEGER, next_offset BIGINT,
    updated_at BIGINT, PRIMARY KEY (sink, topic, \"partition\"))"
insert="INSERT INTO charges (message_id, customer, amount) VALUES (gen_random_uuid()::text, 'customer-7', 12.34);"
now="(extract(epoch from clock_timestamp()) * 1000)::bigint"
{
  echo "BEGIN;"
  for _ in $(seq "$BATCH"); do echo "$insert"; done
  echo "COMMIT;"
} >"$WORK/at-least-once.sql"
{
  echo "BEGIN;"
  echo "INSERT INTO once_sink_offsets VALUES ('bench', 'charges', :client_id, 0, $now) ON CONFLICT DO NOTHING;"
  echo "SELECT next_offset AS stored FROM once_sink_offsets WHERE sink = 'bench' AND topic = 'charges' AND \"partition\" = :client_id FOR UPDATE \\gset"
  for _ in $(seq "$BATCH"); do echo "$insert"; done
  echo "UPDATE once_sink_offsets SET next_offset = :stored + $BATCH, updated_at = $now WHERE sink = 'bench' AND topic = 'charges' AND \"partition\" = :client_id AND next_offset = :stored;"
  echo "COMMIT;"
} >"$WORK/exactly-once.sql"
echo "| round | transaction | batches/s | records/s | ms per batch |"
echo "|---:|---|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for mode in at-least-once exactly-once; do
    "${psql[@]}" -c CHECKPOINT
    tps=$("$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared -c 1 -T "$TIME" \
      -f "$WORK/$mode.sql" postgres 2>/dev/null | awk '/^tps/ { print $3 }')
    awk -v round="$round" -v mode="$mode" -v tps="$tps" -v batch="$BATCH" \
      'BEGIN { printf "| %d | %s | %.1f | %.0f | %.2f |\n", round, mode, tps, tps * batch, 1000 / tps }'
  done
done

# 2. The broker's share.
"$ONCE" serve --listen "$BROKER" --data-dir "$WORK/broker" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/${BROKER%:*}/${BROKER#*:}") 2>/dev/null && break; sleep 0.1; done
"$ONCE" topic create charges --partitions 1 --bootstrap "$BROKER" >/dev/null
python3 - "$BROKER" "$COMMITS" <<'EOF'
import statistics, sys, time
from confluent_kafka import Consumer, TopicPartition

bootstrap, commits = sys.argv[1], int(sys.argv[2])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "profile", "enable.auto.commit": False,
                     "metadata.recovery.strategy": "none"})
consumer.assign([TopicPartition("charges", 0)])
times = []
for offset in range(commits):
    started = time.perf_counter()
    consumer.commit(offsets=[TopicPartition("charges", 0, offset)], asynchronous=False)
    times.append((time.perf_counter() - started) * 1000)
times.sort()
print(f"\nsynchronous OffsetCommit to Once, {commits} commits: median {statistics.median(times):.2f} ms, "
      f"p90 {times[int(len(times) * 0.9)]:.2f} ms, max {times[-1]:.2f} ms")
consumer.close()
EOF
