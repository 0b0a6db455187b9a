"""KIP-554 with confluent-kafka's AdminClient over SASL_SSL (SCRAM-SHA-512): describe and alter
users' SCRAM credentials, and the broker's error codes.

Usage: scram_users.py BOOTSTRAP CA_PEM ADMIN_USER ADMIN_PASSWORD
Prints one line per check, `name value`; the Rust test compares them.
"""
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

bootstrap, ca, user, password = sys.argv[1:5]
admin = AdminClient(
    {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": ca,
        "metadata.recovery.strategy": "none",
    }
)


def error_name(future):
    """The Kafka error's name a future failed with, or OK."""
    try:
        future.result(30)
        return "OK"
    except KafkaException as exception:
        return exception.args[0].name()


def describe_all():
    described = admin.describe_user_scram_credentials().result(30)
    return {
        name: sorted((info.mechanism.name, info.iterations) for info in description.scram_credential_infos)
        for name, description in described.items()
    }


sha256 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
sha512 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
futures = admin.alter_user_scram_credentials(
    [
        UserScramCredentialUpsertion("py-user", sha512, b"py-secret", b"some salt"),
        UserScramCredentialUpsertion("py-other", sha256, b"py-secret"),
    ]
)
for name in sorted(futures):
    print("upsert", name, error_name(futures[name]))
print("all", sorted(describe_all().items()))

named = admin.describe_user_scram_credentials(["py-user", "nobody"])
print("describe py-user", sorted((i.mechanism.name, i.iterations) for i in named["py-user"].result(30).scram_credential_infos))
print("describe nobody", error_name(named["nobody"]))

futures = admin.alter_user_scram_credentials(
    [
        UserScramCredentialDeletion("ghost", ScramMechanism.SCRAM_SHA_256),
        UserScramCredentialUpsertion("few", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw"),
        UserScramCredentialUpsertion("both", sha256, b"pw"),
        UserScramCredentialDeletion("both", ScramMechanism.SCRAM_SHA_512),
        UserScramCredentialDeletion("py-other", ScramMechanism.SCRAM_SHA_256),
    ]
)
for name in sorted(futures):
    print("alter", name, error_name(futures[name]))
print("all", sorted(describe_all().items()))
