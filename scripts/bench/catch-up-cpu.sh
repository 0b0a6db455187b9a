#!/bin/bash
# A warm catch-up read's cost to the broker, two builds alternated (docs/benchmarks.md, session 23).
#
#   A=path/to/once-before B=path/to/once-after scripts/bench/catch-up-cpu.sh [PAIRS] [FETCH_BYTES]
#
# Fills one partition with 1,000,000 records of 1 KiB (kcat -P, once, with build A), then per pair
# starts each build in turn (order alternating) on that data, reads the partition once to warm the
# page cache and the broker's read buffers, and twice more measured: `kcat -C` with fetch.max.bytes
# and max.partition.fetch.bytes at FETCH_BYTES (default 52428800, W8's reader). Prints the wall time
# of each read and the broker's user + system CPU ticks (/proc/<pid>/stat, 100 per second) it took.
# Needs kcat, python3, bc. DATA (default /tmp/catch-up-cpu) is kept between invocations.
set -u
PAIRS=${1:-3}
FETCH=${2:-52428800}
: "${A:?A=path to the first once binary}" "${B:?B=path to the second once binary}"
DATA=${DATA:-/tmp/catch-up-cpu}
PORT=${PORT:-19731}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
start() {
  "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" > "$DATA/broker.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do grep -q "once is serving" "$DATA/broker.log" && return; sleep 0.1; done
  echo "broker did not start: $(tail -5 "$DATA/broker.log")" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null; }
if [ ! -d "$DATA/data" ]; then
  mkdir -p "$DATA"
  python3 -c "import sys; sys.stdout.buffer.write(('x' * 1023 + '\n').encode() * 1000000)" > "$DATA/input"
  start "$A"
  "$A" topic create cu --bootstrap "127.0.0.1:$PORT"
  kcat -P -b "127.0.0.1:$PORT" -t cu -p 0 -X linger.ms=20 -X batch.size=1000000 -l "$DATA/input"
  stop
  rm "$DATA/input"
fi
read_all() {
  local t0 t1
  t0=$(date +%s.%N)
  kcat -C -b "127.0.0.1:$PORT" -t cu -p 0 -o beginning -e -q \
    -X fetch.max.bytes="$FETCH" -X max.partition.fetch.bytes="$FETCH" > /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
for pair in $(seq "$PAIRS"); do
  if [ $((pair % 2)) = 1 ]; then order="A B"; else order="B A"; fi
  for build in $order; do
    binary=${!build}
    start "$binary"
    read_all > /dev/null
    c0=$(ticks "$PID"); s1=$(read_all); c1=$(ticks "$PID"); s2=$(read_all); c2=$(ticks "$PID")
    echo "pair $pair build $build: reads ${s1} s, ${s2} s; broker ticks $((c1 - c0)), $((c2 - c1)); load $(cut -d' ' -f1 /proc/loadavg)"
    stop
  done
done
