"""Dynamic broker configs, with Kafka's own `kafka-configs` (ConfigCommand) and librdkafka's
admin client: set for the cluster default (`--entity-default`) and for one broker, stored in
the metadata log (they survive a restart), applied live (a topic without an override follows
the new `log.retention.ms` / `log.roll.ms` at once), reported by DescribeConfigs with Kafka's
sources for the broker and for topics' synonyms, refused for a setting that cannot change at
run time or for a bad value, and removed with `--delete-config`.
"""
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from conftest import running_broker
from test_cluster import kafka_tool
from test_offsets import TunedBroker

CONFIG_COMMAND = "kafka.admin.ConfigCommand"


class DynamicBroker(TunedBroker):
    settings = {"log.retention.check.interval.ms": "300"}


@pytest.fixture(scope="module")
def dbroker():
    yield from running_broker(DynamicBroker, "dynamic")


def configs(b, *args, check=True):
    return kafka_tool(CONFIG_COMMAND, "--bootstrap-server", b, "--entity-type", "brokers",
                      *args, check=check)


def describe(b, resource_type, name):
    admin = AdminClient({"bootstrap.servers": b})
    resource = ConfigResource(resource_type, name)
    return admin.describe_configs([resource])[resource].result(timeout=30)


def broker_id(b):
    return str(next(iter(AdminClient({"bootstrap.servers": b}).list_topics(timeout=10).brokers)))


def cluster_defaults(b):
    """`name=value` of each dynamic cluster-default broker config, as kafka-configs lists them."""
    listed = configs(b, "--entity-default", "--describe").stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("  ")}


def log_start(b, topic):
    c = Consumer({"bootstrap.servers": b, "group.id": f"ls-{uuid.uuid4().hex[:6]}"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[0]
    finally:
        c.close()


def test_dynamic_broker_configs_apply_live_and_persist(dbroker):
    b = dbroker.bootstrap
    node = broker_id(b)
    topic = f"dyn-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": b})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)

    configs(b, "--entity-default", "--alter", "--add-config",
            "log.retention.ms=2000,log.roll.ms=300")
    entries = describe(b, ConfigResource.Type.BROKER, node)
    assert entries["log.retention.ms"].value == "2000"
    assert entries["log.retention.ms"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    # The cluster default itself (DescribeConfigs of the empty broker name): what is set there
    # (Kafka's KRaft bootstrap also puts min.insync.replicas there).
    assert {"log.retention.ms=2000", "log.roll.ms=300"} <= cluster_defaults(b)
    topic_entries = describe(b, ConfigResource.Type.TOPIC, topic)
    assert topic_entries["retention.ms"].value == "2000"
    assert topic_entries["retention.ms"].source == \
        ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value

    # Applied live: segments roll every 300 ms and go 2 s after their last record.
    p = Producer({"bootstrap.servers": b, "linger.ms": 0})
    for i in range(8):
        for j in range(20):
            p.produce(topic, value=f"{i}-{j}".encode(), partition=0)
        p.flush(10)
        time.sleep(0.4)
    deadline = time.monotonic() + 30
    while log_start(b, topic) == 0:
        assert time.monotonic() < deadline, "the dynamic log.retention.ms was not applied"
        time.sleep(0.3)

    # A broker's own value wins over the cluster default.
    configs(b, "--entity-name", node, "--alter", "--add-config", "log.retention.ms=600000")
    entries = describe(b, ConfigResource.Type.BROKER, node)
    assert entries["log.retention.ms"].value == "600000"
    assert entries["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert describe(b, ConfigResource.Type.TOPIC, topic)["retention.ms"].value == "600000"

    # Refused: a setting that cannot change at run time, and a bad value.
    refused = configs(b, "--entity-default", "--alter", "--add-config", "log.dirs=/tmp/x",
                      check=False)
    assert refused.returncode != 0 and "dynamically" in (refused.stdout + refused.stderr), \
        refused.stdout + refused.stderr
    refused = configs(b, "--entity-default", "--alter", "--add-config", "log.retention.ms=soon",
                      check=False)
    assert refused.returncode != 0 and "log.retention.ms" in (refused.stdout + refused.stderr)

    # Stored in the metadata log: they survive a restart.
    dbroker.restart()
    entries = describe(b, ConfigResource.Type.BROKER, node)
    assert entries["log.retention.ms"].value == "600000"
    assert entries["log.roll.ms"].value == "300"
    assert entries["log.roll.ms"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value

    configs(b, "--entity-name", node, "--alter", "--delete-config", "log.retention.ms")
    configs(b, "--entity-default", "--alter", "--delete-config", "log.retention.ms,log.roll.ms")
    entries = describe(b, ConfigResource.Type.BROKER, node)
    assert entries["log.retention.ms"].source in (ConfigSource.DEFAULT_CONFIG.value,
                                                  ConfigSource.STATIC_BROKER_CONFIG.value)
    # (Kafka reports none: its built-in default is log.retention.hours=168.)
    assert entries["log.retention.ms"].value in ("604800000", None)
    assert not {d for d in cluster_defaults(b) if d.startswith(("log.retention", "log.roll"))}
