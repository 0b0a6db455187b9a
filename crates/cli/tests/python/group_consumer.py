"""A confluent-kafka consumer in a group: reads COUNT records of TOPIC as a member of GROUP, commits
each one synchronously after printing it, then leaves the group.

Usage: group_consumer.py BOOTSTRAP TOPIC GROUP COUNT
"""

import sys
import time

from confluent_kafka import Consumer, libversion

# librdkafka >= 2.10 re-bootstraps by default and can then hang after the only broker restarts
# (docs/clients.md); older versions do not know the setting and refuse it.
NO_REBOOTSTRAP = {"metadata.recovery.strategy": "none"} if libversion()[1] >= 0x020A0000 else {}


def main():
    bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        **NO_REBOOTSTRAP,
    })
    consumer.subscribe([topic])
    seen = 0
    deadline = time.time() + 60
    try:
        while seen < count:
            if time.time() > deadline:
                print(f"timed out after {seen} records", file=sys.stderr)
                return 1
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                print(f"consumer error: {message.error()}", file=sys.stderr)
                continue
            print(message.value().decode(), flush=True)
            consumer.commit(message=message, asynchronous=False)
            seen += 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
