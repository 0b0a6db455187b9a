"""aiokafka's admin client against a topic's configs: AlterConfigs (the non-incremental API 33, the only
one aiokafka has) replaces the topic's overrides, validate_only changes nothing, refused changes leave
the topic as it was. Prints one JSON object of what it saw; the Rust test decides what is right.

Usage: aiokafka_alter_configs.py BOOTSTRAP TOPIC
"""

import asyncio
import json
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.admin import AlterConfigsRequest

TOPIC_RESOURCE = 2


DEFAULT_CONFIG_SOURCE = 5


def configs_of(responses, topic):
    """{name: [value, is_default]} of the topic in DescribeConfigs responses: v0 says is_default, v1+
    says the config source in the same place."""
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            if name != topic:
                continue
            if error_code != 0:
                return {"error_code": error_code, "error_message": error_message}
            if response.API_VERSION == 0:
                return {entry[0]: [entry[1], entry[3]] for entry in entries}
            return {entry[0]: [entry[1], entry[3] == DEFAULT_CONFIG_SOURCE] for entry in entries}
    return None


def errors_of(responses):
    """[[error_code, error_message, resource_name]] of AlterConfigs responses."""
    found = []
    for response in responses:
        for error_code, error_message, _type, name in response.resources:
            found.append([error_code, error_message, name])
    return found


async def main(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    seen = {}
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"retention.ms": "60000", "segment.bytes": "1048576"})]
        )

        async def describe():
            return configs_of(await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]), topic)

        async def alter(configs, name=topic, resource_type=ConfigResourceType.TOPIC):
            return errors_of(await admin.alter_configs([ConfigResource(resource_type, name, configs)]))

        seen["created"] = await describe()
        seen["replace"] = await alter({"retention.bytes": "1048576", "max.message.bytes": "2000"})
        seen["after_replace"] = await describe()
        # validate_only is not exposed by alter_configs; the request class takes it.
        request = AlterConfigsRequest(
            resources=[(TOPIC_RESOURCE, topic, [("retention.ms", "1000")])], validate_only=True
        )
        seen["validate_only"] = errors_of([await admin._send_request(request)])
        seen["after_validate_only"] = await describe()
        seen["unknown_key"] = await alter({"retention.bytes": "5", "no.such.key": "1"})
        seen["bad_value"] = await alter({"cleanup.policy": "compact"})
        seen["after_refused"] = await describe()
        seen["unknown_topic"] = await alter({"retention.ms": "1000"}, name=topic + "-absent")
        seen["broker"] = await alter({"num.partitions": "3"}, name="0", resource_type=ConfigResourceType.BROKER)
        seen["broker_empty"] = await alter({}, name="0", resource_type=ConfigResourceType.BROKER)
    finally:
        await admin.close()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
