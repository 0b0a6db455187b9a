"""ACLs against a real `once serve --authorization true`, with confluent-kafka (librdkafka).

Usage: acl_scenarios.py SASL_SSL_BOOTSTRAP SSL_BOOTSTRAP CA CLIENT_CERT CLIENT_KEY
   or: acl_scenarios.py --disabled PLAINTEXT_BOOTSTRAP

The broker has users admin (a super user), alice and bob (password "<name>-secret"); the SSL
listener takes client certificates, the test's one with subject CN=billing. Every check raises
(AssertionError, non-zero exit) when it fails; the last line printed is "ALL CHECKS PASSED".
"""
import os
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

NO_REBOOTSTRAP = {"metadata.recovery.strategy": "none"}  # librdkafka issues 5456, 5511


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def error_code(exception):
    error = exception.args[0]
    return error.code() if isinstance(error, KafkaError) else None


if sys.argv[1] == "--disabled":
    admin = AdminClient({"bootstrap.servers": sys.argv[2], **NO_REBOOTSTRAP})
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:*", "*",
                         AclOperation.ALL, AclPermissionType.ALLOW)
    try:
        admin.create_acls([binding])[binding].result(30)
        raise AssertionError("CreateAcls without authorization must fail")
    except KafkaException as exception:
        check(error_code(exception) == KafkaError.SECURITY_DISABLED, "CreateAcls answers SECURITY_DISABLED")
    print("ALL CHECKS PASSED")
    sys.exit(0)

sasl_ssl, ssl, ca, client_cert, client_key = sys.argv[1:6]


def sasl(user, mechanism="SCRAM-SHA-512", password=None):
    return {"bootstrap.servers": sasl_ssl, "security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism,
            "sasl.username": user, "sasl.password": password or user + "-secret", "ssl.ca.location": ca,
            **NO_REBOOTSTRAP}


mtls = {"bootstrap.servers": ssl, "security.protocol": "SSL", "ssl.ca.location": ca,
        "ssl.certificate.location": client_cert, "ssl.key.location": client_key, **NO_REBOOTSTRAP}


def acl(resource_type, name, principal, operation, permission=AclPermissionType.ALLOW,
        pattern=ResourcePatternType.LITERAL):
    return AclBinding(resource_type, name, pattern, principal, "*", operation, permission)


def produce(config, topic, values, **extra):
    """Produces values to partition 0; answers the delivery error codes (None for delivered)."""
    outcomes = []
    producer = Producer({**config, "message.timeout.ms": 10000, **extra})
    for value in values:
        producer.produce(topic, value=value.encode(), partition=0,
                         on_delivery=lambda error, _message: outcomes.append(error.code() if error else None))
    producer.flush(30)
    return outcomes


def read_all(config, topic, isolation="read_uncommitted"):
    consumer = Consumer({**config, "group.id": "admin-reader-" + uuid.uuid4().hex, "enable.auto.commit": False,
                         "isolation.level": isolation})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    consumer.assign([TopicPartition(topic, 0, low)])
    values = []
    polls = 200
    while polls > 0 and (not values or len(values) < high - low):
        polls -= 1
        message = consumer.poll(0.1)
        if message is None or message.error():
            continue
        values.append(message.value().decode())
        if message.offset() + 1 >= high:
            break
    consumer.close()
    return values


admin = AdminClient(sasl("admin"))
for future in admin.create_topics([NewTopic(name, 1, 1) for name in ("payments", "public", "payments-frozen")]).values():
    future.result(30)

alice, bob, billing = "User:alice", "User:bob", "User:CN=billing"
bindings = [
    acl(ResourceType.TOPIC, "payments", alice, AclOperation.ALL, pattern=ResourcePatternType.PREFIXED),
    acl(ResourceType.TOPIC, "payments-frozen", alice, AclOperation.WRITE, AclPermissionType.DENY),
    acl(ResourceType.GROUP, "billing-", alice, AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
    acl(ResourceType.TRANSACTIONAL_ID, "billing-txn", alice, AclOperation.WRITE),
    acl(ResourceType.TOPIC, "payments", bob, AclOperation.READ),
    acl(ResourceType.TOPIC, "public", bob, AclOperation.WRITE),
    acl(ResourceType.GROUP, "bob-", bob, AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
    acl(ResourceType.TRANSACTIONAL_ID, "bob-txn", bob, AclOperation.WRITE),
    # Bob may see alice's transactional id (find its coordinator, describe it) but not use it.
    acl(ResourceType.TRANSACTIONAL_ID, "billing-txn", bob, AclOperation.DESCRIBE),
    acl(ResourceType.TOPIC, "payments", billing, AclOperation.WRITE),
]
for binding, future in admin.create_acls(bindings).items():
    future.result(30)
check(True, f"the super user created {len(bindings)} ACLs")

every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                         AclPermissionType.ANY)
described = admin.describe_acls(every).result(30)
check(len(described) == len(bindings), f"DescribeAcls lists the {len(bindings)} ACLs (got {len(described)})")
matching = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, "payments-eu", ResourcePatternType.MATCH, None,
                                                None, AclOperation.ANY, AclPermissionType.ANY)).result(30)
check(len(matching) == 1 and matching[0].principal == alice, "a MATCH filter finds the prefixed ACL that applies")

alice_admin = AdminClient(sasl("alice"))
# librdkafka (2.12) drops DescribeAcls' top-level error code and answers an empty list; the code
# itself is checked with `once acl list` in acl.rs.
try:
    seen = alice_admin.describe_acls(every).result(30)
    check(seen == [], f"alice: DescribeAcls shows her nothing (got {seen})")
except KafkaException as exception:
    check(error_code(exception) == KafkaError.CLUSTER_AUTHORIZATION_FAILED, "alice: DescribeAcls refused")
grant = acl(ResourceType.TOPIC, "public", alice, AclOperation.ALL)
try:
    alice_admin.create_acls([grant])[grant].result(30)
    raise AssertionError("alice may not grant herself ACLs")
except KafkaException as exception:
    check(error_code(exception) == KafkaError.CLUSTER_AUTHORIZATION_FAILED, "alice: CreateAcls refused")

# Alice's application: a transaction committed, one aborted, a consumer group reading committed.
producer = Producer({**sasl("alice"), "transactional.id": "billing-txn"})
producer.init_transactions(30)
producer.begin_transaction()
for value in ("a", "b", "c"):
    producer.produce("payments", value=value.encode(), partition=0)
producer.commit_transaction(30)
producer.begin_transaction()
for value in ("x", "y"):
    producer.produce("payments", value=value.encode(), partition=0)
producer.flush(30)
producer.abort_transaction(30)
check(True, "alice committed and aborted transactions on payments")

consumer = Consumer({**sasl("alice"), "group.id": "billing-readers", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "isolation.level": "read_committed"})
consumer.subscribe(["payments"])
values = []
for _ in range(300):
    message = consumer.poll(0.1)
    if message is not None and not message.error():
        values.append(message.value().decode())
    if len(values) == 3:
        break
consumer.commit(asynchronous=False)
committed = consumer.committed([TopicPartition("payments", 0)], timeout=30)[0].offset
consumer.close()
check(values == ["a", "b", "c"], f"alice's group read the committed records (got {values})")
check(committed > 0, f"alice's group committed its offset ({committed})")

check(produce(sasl("alice"), "payments-frozen", ["f"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED],
      "a DENY overrides alice's prefixed ALLOW: payments-frozen refused")

# Bob may read payments (so he sees it) but not write it: the Produce itself is refused.
before = read_all(sasl("admin"), "payments")
for extra in ({}, {"enable.idempotence": True}):
    outcomes = produce(sasl("bob"), "payments", ["bob-1", "bob-2"], **extra)
    check(outcomes == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 2,
          f"bob's produce to payments refused {extra} (got {outcomes})")
check(read_all(sasl("admin"), "payments") == before, "nothing of bob's was stored")
check(produce(sasl("bob"), "public", ["hello"]) == [None], "bob writes where he may")

bob_admin = AdminClient(sasl("bob"))
listed = bob_admin.list_topics(timeout=30).topics
check("public" in listed and "payments" in listed and "payments-frozen" not in listed,
      f"Metadata hides the topics bob may not describe (saw {sorted(listed)})")
named = bob_admin.list_topics(topic="payments-frozen", timeout=30).topics["payments-frozen"]
check(named.error is not None and named.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED,
      "a topic bob names but may not describe: TOPIC_AUTHORIZATION_FAILED")
try:
    bob_admin.create_topics([NewTopic("bob-made", 1, 1)])["bob-made"].result(30)
    raise AssertionError("bob may not create topics")
except KafkaException as exception:
    check(error_code(exception) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "bob: CreateTopics refused")
try:
    bob_admin.delete_topics(["public"])["public"].result(30)
    raise AssertionError("bob may not delete topics")
except KafkaException as exception:
    check(error_code(exception) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "bob: DeleteTopics refused")

# Bob cannot take over alice's transactional id: not to init it (which would fence her and abort
# her open transaction), not to write under it.
alice_producer = Producer({**sasl("alice"), "transactional.id": "billing-txn"})
alice_producer.init_transactions(30)
alice_producer.begin_transaction()
alice_producer.produce("payments", value=b"d", partition=0)
alice_producer.flush(30)
thief = Producer({**sasl("bob"), "transactional.id": "billing-txn"})
try:
    thief.init_transactions(15)
    raise AssertionError("bob may not init alice's transactional id")
except KafkaException as exception:
    check(error_code(exception) == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
          "bob: InitProducerId for billing-txn refused")
# `once txn abort` as bob (given by the test: ONCE_BIN and BOB_CONFIG): by transactional id it is
# InitProducerId (WRITE on the id), at a partition WriteTxnMarkers (CLUSTER_ACTION): both refused.
if os.environ.get("ONCE_BIN"):
    once_bin, bob_config = os.environ["ONCE_BIN"], os.environ["BOB_CONFIG"]
    for how, refusal in ((["--transactional-id", "billing-txn"], "TransactionalIdAuthorizationFailed"),
                         (["--topic", "payments", "--partition", "0", "--producer-id", "0", "--producer-epoch", "0"],
                          "ClusterAuthorizationFailed")):
        aborted = subprocess.run([once_bin, "txn", "abort", *how, "--bootstrap", sasl_ssl, "--command-config", bob_config],
                                 capture_output=True, text=True, timeout=120)
        check(aborted.returncode != 0 and refusal in aborted.stdout + aborted.stderr,
              f"bob: once txn abort {how[0]} refused with {refusal} ({aborted.stdout}{aborted.stderr})")
alice_producer.commit_transaction(30)
check(read_all(sasl("admin"), "payments", "read_committed")[-1] == "d",
      "alice's open transaction survived bob's attempt and committed")

# Bob's own transactional id works; his consumer group must be one he may read.
bob_txn = Producer({**sasl("bob"), "transactional.id": "bob-txn"})
bob_txn.init_transactions(30)
bob_txn.begin_transaction()
bob_txn.produce("public", value=b"t", partition=0)
bob_txn.commit_transaction(30)
check(True, "bob's transactions on his own id work")
stranger = Consumer({**sasl("bob"), "group.id": "billing-readers", "auto.offset.reset": "earliest"})
stranger.subscribe(["payments"])
refused = None
for _ in range(100):
    message = stranger.poll(0.1)
    if message is not None and message.error():
        refused = message.error().code()
        break
    if message is not None:
        raise AssertionError("bob read through alice's group")
stranger.close()
check(refused == KafkaError.GROUP_AUTHORIZATION_FAILED, f"bob in alice's group: GROUP_AUTHORIZATION_FAILED ({refused})")

# The certificate's subject is the principal on the mTLS listener.
check(produce(mtls, "payments", ["cert"], **{"enable.idempotence": True}) == [None],
      "CN=billing (mTLS) writes payments")
check(produce(mtls, "public", ["cert"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED], "CN=billing may not write public")

# PLAIN on the same listener, same ACLs.
check(produce(sasl("alice", "PLAIN"), "payments", ["plain"]) == [None], "alice over PLAIN writes payments")

# Deleting bob's ACLs takes his rights away at once.
deleted = admin.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, bob, None,
                                              AclOperation.ANY, AclPermissionType.ANY)])
removed = list(deleted.values())[0].result(30)
check(len(removed) == 5, f"DeleteAcls removed bob's 5 ACLs (got {len(removed)})")
check(produce(sasl("bob"), "public", ["again"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED],
      "bob's writes refused after his ACLs were deleted")
print("ALL CHECKS PASSED")
