"""The asyncio Ketch client: ``Producer``, ``Consumer``, ``Admin``.

This is the one implementation; ``ketch.Producer`` & co. are blocking
wrappers that run these objects on a private event loop thread. Usage::

    async with ketch.aio.Producer("127.0.0.1:9092", acks="all") as producer:
        fut = await producer.send("events", b"hello", key=b"user-1")
        meta = await fut                      # RecordMetadata(topic, partition, offset, timestamp)

    async with ketch.aio.Consumer("events", bootstrap_servers="127.0.0.1:9092",
                                  auto_offset_reset="earliest") as consumer:
        async for record in consumer:        # ConsumerRecord
            ...
"""

from ketch.aio.admin import (
    Admin,
    BrokerDescription,
    ClusterDescription,
    NewPartitions,
    NewTopic,
    PartitionDescription,
    TopicDescription,
)
from ketch.aio.admin_configs import ConfigEntry, ConfigResource, ConfigResourceType, ConfigSource
from ketch.aio.consumer import Consumer
from ketch.aio.producer import Producer
from ketch.group_rules import CommitFailedError, ConsumerGroupMetadata, ConsumerRebalanceListener, OffsetAndMetadata
from ketch.records import ConsumerRecord, OffsetAndTimestamp, RecordMetadata, TopicPartition

__all__ = [
    "Admin",
    "BrokerDescription",
    "ClusterDescription",
    "CommitFailedError",
    "ConfigEntry",
    "ConfigResource",
    "ConfigResourceType",
    "ConfigSource",
    "Consumer",
    "ConsumerGroupMetadata",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "NewPartitions",
    "NewTopic",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
