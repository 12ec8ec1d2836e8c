"""Ketch: a distributed, replicated commit log (client library, CLI, record codec).

The blocking clients (``ketch.Producer``, ``ketch.Consumer``, ``ketch.Admin``)
and the record types are exported lazily, so ``import ketch.errors`` (as the
broker does) does not load grpc and the client. ``ketch.aio`` holds the
asyncio clients with the same names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch.acl import AclBinding as AclBinding
    from ketch.acl import AclBindingFilter as AclBindingFilter
    from ketch.aio.admin import BrokerDescription as BrokerDescription
    from ketch.aio.admin import ClusterDescription as ClusterDescription
    from ketch.aio.admin import NewPartitions as NewPartitions
    from ketch.aio.admin import NewTopic as NewTopic
    from ketch.aio.admin import PartitionDescription as PartitionDescription
    from ketch.aio.admin import TopicDescription as TopicDescription
    from ketch.aio.admin_acls import ScramDeletion as ScramDeletion
    from ketch.aio.admin_acls import ScramUpsertion as ScramUpsertion
    from ketch.aio.admin_configs import ConfigEntry as ConfigEntry
    from ketch.aio.admin_configs import ConfigResource as ConfigResource
    from ketch.aio.admin_configs import ConfigResourceType as ConfigResourceType
    from ketch.aio.admin_configs import ConfigSource as ConfigSource
    from ketch.aio.admin_reassignments import PartitionReassignment as PartitionReassignment
    from ketch.group_rules import CommitFailedError as CommitFailedError
    from ketch.group_rules import ConsumerGroupMetadata as ConsumerGroupMetadata
    from ketch.group_rules import ConsumerRebalanceListener as ConsumerRebalanceListener
    from ketch.group_rules import OffsetAndMetadata as OffsetAndMetadata
    from ketch.records import ConsumerRecord as ConsumerRecord
    from ketch.records import OffsetAndTimestamp as OffsetAndTimestamp
    from ketch.records import RecordMetadata as RecordMetadata
    from ketch.records import TopicPartition as TopicPartition
    from ketch.sync import Admin as Admin
    from ketch.sync import Consumer as Consumer
    from ketch.sync import FutureRecordMetadata as FutureRecordMetadata
    from ketch.sync import Producer as Producer

_EXPORTS = {
    "Admin": "ketch.sync",
    "Consumer": "ketch.sync",
    "FutureRecordMetadata": "ketch.sync",
    "Producer": "ketch.sync",
    "BrokerDescription": "ketch.aio.admin",
    "ClusterDescription": "ketch.aio.admin",
    "NewPartitions": "ketch.aio.admin",
    "NewTopic": "ketch.aio.admin",
    "PartitionDescription": "ketch.aio.admin",
    "TopicDescription": "ketch.aio.admin",
    "ConfigEntry": "ketch.aio.admin_configs",
    "ConfigResource": "ketch.aio.admin_configs",
    "ConfigResourceType": "ketch.aio.admin_configs",
    "ConfigSource": "ketch.aio.admin_configs",
    "PartitionReassignment": "ketch.aio.admin_reassignments",
    "AclBinding": "ketch.acl",
    "ScramDeletion": "ketch.aio.admin_acls",
    "ScramUpsertion": "ketch.aio.admin_acls",
    "AclBindingFilter": "ketch.acl",
    "CommitFailedError": "ketch.group_rules",
    "ConsumerGroupMetadata": "ketch.group_rules",
    "ConsumerRebalanceListener": "ketch.group_rules",
    "OffsetAndMetadata": "ketch.group_rules",
    "ConsumerRecord": "ketch.records",
    "OffsetAndTimestamp": "ketch.records",
    "RecordMetadata": "ketch.records",
    "TopicPartition": "ketch.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ketch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
