"""Edge cases of authorization found in review, with confluent-kafka, as User:ANONYMOUS.

Usage: acl_edges.py commit BOOTSTRAP      (authorization off: group g1 commits offsets on open and hidden)
   or: acl_edges.py check BOOTSTRAP       (authorization on, ACLs from the test's acls.json)

The ACLs: ANONYMOUS may do ALL on every topic and READ group g1, but is DENIED ALL on topic
`hidden` from host 127.0.0.1. The broker listens on [::ffff:127.0.0.1] (an IPv4 client through an
IPv6 socket) and does not auto-create topics.
"""
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

mode, bootstrap = sys.argv[1:3]
base = {"bootstrap.servers": bootstrap, "metadata.recovery.strategy": "none"}


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what, flush=True)


if mode == "commit":
    producer = Producer(base)
    for topic in ("open", "hidden"):
        producer.produce(topic, value=b"v", partition=0)
    producer.flush(30)
    consumer = Consumer({**base, "group.id": "g1", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("open", 0, 1), TopicPartition("hidden", 0, 1)], asynchronous=False)
    consumer.close()
    print("committed")
    sys.exit(0)

outcomes = []
producer = Producer({**base, "message.timeout.ms": 5000})
for topic, value in (("hidden", b"x"), ("open", b"y")):
    try:
        producer.produce(topic, value=value, partition=0,
                         on_delivery=lambda error, _m: outcomes.append(error.code() if error else None))
    except KafkaException as error:
        # librdkafka refuses at once, instead of in the delivery report, when the metadata that says
        # the topic is not authorized has already arrived (a race with the producer's first request).
        outcomes.append(error.args[0].code())
producer.flush(30)
check(sorted(outcomes, key=str) == sorted([KafkaError.TOPIC_AUTHORIZATION_FAILED, None], key=str),
      f"a DENY from 127.0.0.1 holds for the client seen as ::ffff:127.0.0.1 (got {outcomes})")

admin = AdminClient(base)
missing = admin.list_topics(topic="nosuch", timeout=30).topics["nosuch"]
check(missing.error is not None and missing.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART,
      f"without auto-creation a missing topic is unknown, not an authorization failure ({missing.error})")

offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g1")])["g1"].result(30)
topics = sorted({partition.topic for partition in offsets.topic_partitions})
check(topics == ["open"], f"all of g1's offsets: topics it may not describe are left out (got {topics})")

cluster = admin.describe_cluster(request_timeout=30).result()
check(len(cluster.nodes) == 1, "DescribeCluster needs no permission, as on a Kafka broker")
print("ALL CHECKS PASSED")
