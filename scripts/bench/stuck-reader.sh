#!/usr/bin/env bash
# The memory a client that stops reading its socket makes the broker hold (docs/benchmarks.md,
# session 22): starts `once serve` on a throw-away data dir, writes BACKLOG_MB of records to one
# partition with kcat, then opens CONNECTIONS connections with a 4 KiB receive buffer each, sends
# REQUESTS Fetch v4 requests of FETCH_BYTES on each for that partition from offset 0, reads nothing, and
# prints the broker's resident set before and 10 s after. Needs python3 and kcat.
#
#   ONCE=target/release/once scripts/bench/stuck-reader.sh
set -euo pipefail
ONCE=${ONCE:-target/release/once}
PORT=${PORT:-19901}
BACKLOG_MB=${BACKLOG_MB:-160}
REQUESTS=${REQUESTS:-32}
CONNECTIONS=${CONNECTIONS:-1}
FETCH_BYTES=${FETCH_BYTES:-52428800}
WORK=$(mktemp -d)
trap 'kill "$BROKER" 2>/dev/null || true; wait "$BROKER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$ONCE" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" > "$WORK/serve.log" 2>&1 &
BROKER=$!
sleep 1.5
"$ONCE" topic create backlog --partitions 1 --bootstrap "127.0.0.1:$PORT" > /dev/null
head -c $((BACKLOG_MB * 1000000 * 3 / 4)) /dev/urandom | base64 -w 1000 | kcat -P -b "127.0.0.1:$PORT" -t backlog

python3 - "$PORT" "$BROKER" "$REQUESTS" "$FETCH_BYTES" "$CONNECTIONS" <<'PY'
import socket, struct, sys, time
port, pid, requests, fetch_bytes, connections = (int(arg) for arg in sys.argv[1:6])

def resident_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

def fetch_v4(correlation_id):
    topic = b"backlog"
    # replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level; one topic, one partition.
    body = struct.pack(">iiiib", -1, 0, 0, fetch_bytes, 0)
    body += struct.pack(">ih", 1, len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, fetch_bytes)
    header = struct.pack(">hhih", 1, 4, correlation_id, 5) + b"stuck"
    return struct.pack(">i", len(header) + len(body)) + header + body

print(f"broker resident set before: {resident_mb()} MB")
clients = []
for _ in range(connections):
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    for correlation_id in range(requests):
        client.sendall(fetch_v4(correlation_id))
    clients.append(client)
time.sleep(10)
print(f"broker resident set with {connections} x {requests} fetches of {fetch_bytes} B unread: {resident_mb()} MB")
for client in clients:
    client.close()
PY
