"""Transactions and a consumer group over SASL_SSL with SCRAM-SHA-512, with confluent-kafka.

Usage: secure_txn_group.py BOOTSTRAP CA_PEM USER PASSWORD
Commits one transaction of three records and aborts one of two, then a consumer group reads
read_committed and commits its offsets; prints the values it read, one per line.
"""
import sys
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

bootstrap, ca, user, password = sys.argv[1:5]
security = {
    "bootstrap.servers": bootstrap,
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": user,
    "sasl.password": password,
    "ssl.ca.location": ca,
    # Every librdkafka client Once runs sets it (librdkafka issues 5456 and 5511).
    "metadata.recovery.strategy": "none",
}
topic = "secure-orders"

producer = Producer({**security, "transactional.id": "secure-" + uuid.uuid4().hex})
producer.init_transactions(30)
producer.begin_transaction()
for value in ["a", "b", "c"]:
    producer.produce(topic, value=value.encode(), partition=0)
producer.commit_transaction(30)
producer.begin_transaction()
for value in ["x", "y"]:
    producer.produce(topic, value=value.encode(), partition=0)
producer.flush(30)
producer.abort_transaction(30)

consumer = Consumer({**security, "group.id": "secure-readers", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "isolation.level": "read_committed"})
consumer.subscribe([topic])
values = []
deadline_polls = 300
while len(values) < 3 and deadline_polls > 0:
    deadline_polls -= 1
    message = consumer.poll(0.1)
    if message is None:
        continue
    if message.error():
        raise KafkaException(message.error())
    values.append(message.value().decode())
consumer.commit(asynchronous=False)
committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)
consumer.close()
print("\n".join(values))
print("committed", committed[0].offset)
