"""A transactional copier with confluent-kafka: a read_committed consumer and a transactional producer
copy every record of INPUT to the same partition of OUTPUT, one transaction per batch, the consumed
offsets committed in the transaction (send_offsets_to_transaction). It survives the broker being
killed and restarted: an aborted transaction rewinds the consumer to the last committed positions.

Prints `committed TRANSACTIONS COPIED` after every commit and `done COPIED` when the committed
positions cover TOTAL input records; exits 1 on a fatal error. It has no timeout of its own: a call
that hangs inside librdkafka (issue 5511) holds the GIL-free C call forever, so the caller kills it.

Usage: txn_copier.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID PARTITIONS TOTAL RECOVERY_STRATEGY
RECOVERY_STRATEGY is librdkafka's metadata.recovery.strategy: `none` (what Once's docs ask for) or
`rebootstrap` (librdkafka's default, to show the hang).
"""

import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, libversion

BATCH = 100
CALL_TIMEOUT_S = 10


def log(text):
    print(text, file=sys.stderr, flush=True)


def main():
    if libversion()[1] < 0x020A0000:
        log(f"this copier needs librdkafka >= 2.10 (the newest confluent-kafka), not {libversion()[0]}")
        return 2
    bootstrap, input_topic, output_topic, group, transactional_id = sys.argv[1:6]
    partitions, total, strategy = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
    common = {
        "bootstrap.servers": bootstrap,
        "metadata.recovery.strategy": strategy,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    }
    consumer = Consumer({
        **common,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    producer = Producer({**common, "transactional.id": transactional_id, "transaction.timeout.ms": 30000})
    producer.init_transactions(CALL_TIMEOUT_S)
    # The positions the last committed transaction covers: where an abort rewinds to.
    committed = {partition: 0 for partition in range(partitions)}

    def rewind():
        consumer.assign([TopicPartition(input_topic, p, offset) for p, offset in committed.items()])

    rewind()
    transactions = 0
    while sum(committed.values()) < total:
        messages = [m for m in consumer.consume(BATCH, 0.5) if m is not None]
        errors = [m for m in messages if m.error()]
        for message in errors:
            log(f"consumer error: {message.error()}")
        messages = [m for m in messages if not m.error()]
        if not messages:
            continue
        positions = dict(committed)
        try:
            producer.begin_transaction()
            for message in messages:
                producer.produce(output_topic, message.value(), message.key(), partition=message.partition())
                positions[message.partition()] = message.offset() + 1
            offsets = [TopicPartition(input_topic, p, offset) for p, offset in positions.items()]
            log(f"transaction {transactions + 1}: send_offsets_to_transaction")
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), CALL_TIMEOUT_S)
            log(f"transaction {transactions + 1}: commit_transaction")
            commit(producer)
        except KafkaException as error:
            if not abortable(error):
                log(f"fatal: {error}")
                return 1
            log(f"aborting: {error}")
            abort(producer)
            rewind()
            continue
        committed = positions
        transactions += 1
        print(f"committed {transactions} {sum(committed.values())}", flush=True)
    print(f"done {sum(committed.values())}", flush=True)
    consumer.close()
    return 0


def abortable(error):
    kafka_error = error.args[0]
    return not kafka_error.fatal()


def commit(producer):
    """Commits, retrying while librdkafka says the outcome may still be reached by a retry."""
    while True:
        try:
            producer.commit_transaction(CALL_TIMEOUT_S)
            return
        except KafkaException as error:
            if error.args[0].retriable():
                log(f"retrying the commit: {error}")
                continue
            raise


def abort(producer):
    while True:
        try:
            producer.abort_transaction(CALL_TIMEOUT_S)
            return
        except KafkaException as error:
            if error.args[0].retriable():
                log(f"retrying the abort: {error}")
                continue
            raise


if __name__ == "__main__":
    sys.exit(main())
