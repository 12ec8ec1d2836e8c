"""asyncio Admin client: topics, cluster description, offsets and consumer groups.

Rules:
- Requests go to any broker that answers (known brokers first, then the
  bootstrap list); brokers forward what needs the controller.
- Results are per topic, Kafka style. ``create_topics`` and ``delete_topics``
  raise the typed error of the first failed topic (``TopicAlreadyExistsError``,
  ``InvalidTopicError``, ``UnknownTopicOrPartitionError``...) after the
  broker has processed all of them; the others' outcomes stand. The error
  names the topic.
- ``num_partitions`` / ``replication_factor`` of -1 mean the broker default.
- ``create_partitions({topic: NewPartitions(total_count)})`` grows each topic
  to ``total_count`` partitions (Kafka's shape; explicit replica assignments
  are not offered: the controller places new partitions like a new topic's).
  It raises like ``create_topics`` (a ``KetchError`` with code
  INVALID_PARTITIONS for a total not above the current count).
- ``list_offsets`` asks each partition's leader (ListOffsets, offsets.py),
  on freshly refreshed metadata: "earliest" is the log start offset,
  "latest" the high watermark (the log end offset a consumer can reach), a
  timestamp the first offset whose record is at or after it (-1: none is).
  Retriable errors (no leader, stale metadata, transport) refresh metadata
  and retry with backoff (100 ms doubling to 1 s) until ``request_timeout_ms``.
- Consumer groups. Every group call goes to the group's coordinator,
  found and retried by coordinator_client.py (coordinator errors and
  transport failures: forget it, back off 100 ms doubling to 1 s, look it up
  again, until ``request_timeout_ms``). A broker lists only the groups it coordinates, so
  ``list_consumer_groups`` asks every broker in the metadata and merges the
  answers (all must answer, as with Kafka's ``ListConsumerGroupsResult.all``).
- ``describe_consumer_groups`` adds, per partition the group has committed
  or a member owns, the committed offset, the log end offset (the partition
  leader's high watermark) and the lag (log end - committed; None when
  nothing is committed or the partition is gone). A group the coordinator
  does not know is described with state "Dead" and nothing else, as in Kafka.
- ``alter_consumer_group_offsets`` (ResetGroupOffsets) and
  ``delete_consumer_groups`` work only on groups without members: the broker
  refuses with NON_EMPTY_GROUP, raised as a ``KetchError`` saying to stop
  the group's consumers first. ``delete_consumer_groups`` raises the first
  failed group's error after the others were deleted.
- Transactions: ``list_transactions`` and ``describe_transactions``
  (admin_transactions.py).
- Configs: ``describe_configs`` and ``incremental_alter_configs``
  (admin_configs.py).
- Partition reassignments: ``alter_partition_reassignments`` and
  ``list_partition_reassignments`` (admin_reassignments.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ketch.aio.admin_acls import AclAdmin
from ketch.aio.admin_configs import ConfigsAdmin
from ketch.aio.admin_reassignments import ReassignmentAdmin
from ketch.aio.admin_transactions import TransactionAdmin
from ketch.aio.connection import Connection
from ketch.aio.coordinator_client import CoordinatorClient, group_error, status_of
from ketch.aio.offsets import LATEST, OFFSET_SPECS, list_offsets
from ketch.api.v1 import ketch_pb2
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.records import TopicPartition
from ketch.tls import SecurityConfig

__all__ = [
    "Admin",
    "BrokerDescription",
    "ClusterDescription",
    "ConsumerGroupDescription",
    "ConsumerGroupListing",
    "GroupMemberDescription",
    "GroupPartitionOffset",
    "NewPartitions",
    "NewTopic",
    "PartitionDescription",
    "TopicDescription",
]

RETRY_BACKOFF_S = 0.1
MAX_RETRY_BACKOFF_S = 1.0


@dataclass(frozen=True)
class NewTopic:
    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NewPartitions:
    """The new total number of partitions of a topic (Kafka's ``NewPartitions.increaseTo``)."""

    total_count: int


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    leader_epoch: int
    recovering: bool = False  # offline in unclean recovery (KIP-966)


@dataclass(frozen=True)
class TopicDescription:
    name: str
    topic_id: str
    partitions: list[PartitionDescription]
    replication_factor: int
    configs: dict[str, str]


@dataclass(frozen=True)
class BrokerDescription:
    node_id: int
    host: str
    port: int
    rack: str | None


@dataclass(frozen=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int
    brokers: list[BrokerDescription]


class ConsumerGroupListing(NamedTuple):
    """One group of ``list_consumer_groups``; unpacks as ``(group_id, state, protocol_type)``."""

    group_id: str
    state: str  # Empty, PreparingRebalance, CompletingRebalance, Stable, Dead
    protocol_type: str


@dataclass(frozen=True)
class GroupMemberDescription:
    member_id: str
    client_id: str
    host: str
    assignment: list[TopicPartition]


@dataclass(frozen=True)
class GroupPartitionOffset:
    """A partition the group committed or a member owns, with its progress."""

    topic: str
    partition: int
    committed_offset: int | None  # the next offset the group will consume; None: nothing committed
    log_end_offset: int | None  # the high watermark; None: the partition is gone
    lag: int | None  # log_end_offset - committed_offset when both are known
    member_id: str | None = None  # the member that owns it now, if any
    client_id: str | None = None


@dataclass(frozen=True)
class ConsumerGroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str  # the assignor chosen for this generation
    generation: int
    leader: str  # the leader's member id
    members: list[GroupMemberDescription]
    offsets: list[GroupPartitionOffset]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.offsets if p.lag is not None)


def _raise_first(results: Iterable[ketch_pb2.TopicResult]) -> None:
    for r in results:
        if r.error_code != 0:
            err = error_for(r.error_code, r.error_message or f"topic {r.name!r}")
            if r.name not in str(err):
                err = error_for(r.error_code, f"topic {r.name!r}: {r.error_message}")
            raise err


class Admin(TransactionAdmin, ConfigsAdmin, ReassignmentAdmin, AclAdmin):
    """Topic administration, configs, reassignments and cluster description."""

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        *,
        client_id: str = "ketch-admin",
        request_timeout_ms: int = 30000,
        security_protocol: str = "PLAINTEXT",
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
    ) -> None:
        tls = (security_protocol, ssl_cafile, ssl_certfile, ssl_keyfile)
        sasl = (sasl_mechanism, sasl_plain_username, sasl_plain_password)
        self._conn = Connection(
            bootstrap_servers,
            client_id,
            request_timeout_ms,
            security=SecurityConfig(*tls, *sasl),
        )
        self._coordinators = CoordinatorClient(self._conn, backoff=RETRY_BACKOFF_S, max_backoff=MAX_RETRY_BACKOFF_S)

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_topics(self, topics: list[NewTopic], validate_only: bool = False) -> None:
        request = ketch_pb2.CreateTopicsRequest(
            topics=[
                ketch_pb2.NewTopic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs={k: str(v) for k, v in t.configs.items()},
                )
                for t in topics
            ],
            validate_only=validate_only,
        )
        response = await self._conn.call_any("CreateTopics", request)
        assert isinstance(response, ketch_pb2.CreateTopicsResponse)
        _raise_first(response.topics)

    async def create_partitions(
        self, topic_partitions: Mapping[str, NewPartitions], validate_only: bool = False
    ) -> None:
        request = ketch_pb2.CreatePartitionsRequest(
            topics=[ketch_pb2.CreatePartitionsTopic(name=n, count=p.total_count) for n, p in topic_partitions.items()],
            validate_only=validate_only,
        )
        response = await self._conn.call_any("CreatePartitions", request)
        assert isinstance(response, ketch_pb2.CreatePartitionsResponse)
        _raise_first(response.topics)

    async def delete_topics(self, names: list[str]) -> None:
        response = await self._conn.call_any("DeleteTopics", ketch_pb2.DeleteTopicsRequest(names=names))
        assert isinstance(response, ketch_pb2.DeleteTopicsResponse)
        _raise_first(response.topics)

    async def list_topics(self) -> list[str]:
        response = await self._conn.call_any("Metadata", ketch_pb2.MetadataRequest())
        assert isinstance(response, ketch_pb2.MetadataResponse)
        return sorted(t.name for t in response.topics if t.error_code == 0)

    async def describe_topics(self, names: list[str] | None = None) -> list[TopicDescription]:
        """Descriptions of ``names`` (all topics when None); typed error for an unknown one."""
        request = ketch_pb2.DescribeTopicsRequest(names=names or [])
        response = await self._conn.call_any("DescribeTopics", request)
        assert isinstance(response, ketch_pb2.DescribeTopicsResponse)
        out = []
        for t in response.topics:
            if t.error_code != 0:
                raise error_for(t.error_code, t.error_message or f"topic {t.name!r}")
            out.append(
                TopicDescription(
                    name=t.name,
                    topic_id=t.topic_id,
                    partitions=[
                        PartitionDescription(
                            p.partition, p.leader_id, list(p.replicas), list(p.isr), p.leader_epoch, p.recovering
                        )
                        for p in sorted(t.partitions, key=lambda p: p.partition)
                    ],
                    replication_factor=t.replication_factor,
                    configs=dict(t.configs),
                )
            )
        return out

    async def describe_cluster(self) -> ClusterDescription:
        response = await self._conn.call_any("Metadata", ketch_pb2.MetadataRequest(topics=[]))
        assert isinstance(response, ketch_pb2.MetadataResponse)
        return ClusterDescription(
            cluster_id=response.cluster_id,
            controller_id=response.controller_id,
            brokers=[
                BrokerDescription(b.node_id, b.host, b.port, b.rack or None)
                for b in sorted(response.brokers, key=lambda b: b.node_id)
            ],
        )

    # -- offsets -------------------------------------------------------------------------

    async def list_offsets(self, specs: Mapping[TopicPartition, str | int]) -> dict[TopicPartition, int]:
        """Offsets at each partition's leader: ``{tp: "earliest" | "latest" | timestamp_ms}``.

        "earliest" is the log start offset, "latest" the high watermark; a
        timestamp gives the first offset whose record is at or after it, or -1
        when none is. A missing topic or partition raises
        ``UnknownTopicOrPartitionError``.
        """
        wanted: dict[TopicPartition, int] = {}
        for tp, spec in specs.items():
            if isinstance(spec, str):
                if spec not in OFFSET_SPECS:
                    raise ValueError(f"offset spec {spec!r}: use 'earliest', 'latest' or a timestamp in ms")
                wanted[TopicPartition(*tp)] = OFFSET_SPECS[spec]
            elif spec < 0:
                raise ValueError(f"timestamps must be >= 0 ms since the epoch, got {spec}")
            else:
                wanted[TopicPartition(*tp)] = spec
        return await self._list_offsets(wanted, strict=True)

    async def _list_offsets(self, specs: dict[TopicPartition, int], *, strict: bool) -> dict[TopicPartition, int]:
        """ListOffsets on fresh metadata (offsets.py); a missing partition raises (``strict``) or is left out."""
        if not specs:
            return {}
        self._conn.track({tp.topic for tp in specs})
        await self._conn.refresh()
        found = await list_offsets(
            self._conn,
            specs,
            deadline=time.monotonic() + self._conn.request_timeout,
            backoff=RETRY_BACKOFF_S,
            max_backoff=MAX_RETRY_BACKOFF_S,
            strict=strict,
        )
        return {tp: o.offset for tp, o in found.items()}

    # -- consumer groups -----------------------------------------------------------------

    async def list_consumer_groups(self) -> list[ConsumerGroupListing]:
        """Every group of the cluster: each broker lists those it coordinates; merged, sorted by id."""
        cluster = await self._conn.refresh()
        responses = await asyncio.gather(
            *(
                self._coordinators.retrying(
                    f"ListGroups at broker {node_id}",
                    functools.partial(self._conn.call_node, node_id, "ListGroups", ketch_pb2.ListGroupsRequest()),
                    status=status_of,
                )
                for node_id in sorted(cluster.brokers)
            )
        )
        found: dict[str, ConsumerGroupListing] = {}
        for node_id, response in zip(sorted(cluster.brokers), responses, strict=True):
            if response.status.error_code != ErrorCode.NONE:
                raise error_for(
                    response.status.error_code, f"ListGroups at broker {node_id}: {response.status.error_message}"
                )
            for g in response.groups:
                found.setdefault(g.group_id, ConsumerGroupListing(g.group_id, g.state, g.protocol_type))
        return [found[g] for g in sorted(found)]

    async def describe_consumer_groups(self, group_ids: Iterable[str]) -> list[ConsumerGroupDescription]:
        """State, members and per-partition committed offset, log end offset and lag of each group."""
        ids = [group_ids] if isinstance(group_ids, str) else list(group_ids)
        return list(await asyncio.gather(*(self._describe_group(g) for g in ids)))

    async def _describe_group(self, group_id: str) -> ConsumerGroupDescription:
        described, committed = await asyncio.gather(
            self._coordinators.call(
                group_id,
                "DescribeGroups",
                ketch_pb2.DescribeGroupsRequest(group_ids=[group_id]),
                lambda r: (r.groups[0].error_code, r.groups[0].error_message) if r.groups else (0, ""),
            ),
            self.list_consumer_group_offsets(group_id),
        )
        if not described.groups:
            raise KetchError(
                f"the coordinator did not describe group {group_id!r}", code=ErrorCode.UNKNOWN_SERVER_ERROR
            )
        d = described.groups[0]
        if d.error_code != ErrorCode.NONE:
            raise error_for(d.error_code, d.error_message or f"group {group_id!r}")
        members = [
            GroupMemberDescription(
                m.member_id,
                m.client_id,
                m.client_host,
                sorted(TopicPartition(a.topic, a.partition) for a in m.assignment),
            )
            for m in d.members
        ]
        owner = {tp: m for m in members for tp in m.assignment}
        tps = sorted(set(committed) | set(owner))
        ends = await self._list_offsets(dict.fromkeys(tps, LATEST), strict=False)
        offsets = []
        for tp in tps:
            done, end = committed.get(tp), ends.get(tp)
            m = owner.get(tp)
            offsets.append(
                GroupPartitionOffset(
                    tp.topic,
                    tp.partition,
                    done,
                    end,
                    None if done is None or end is None else max(end - done, 0),
                    m.member_id if m else None,
                    m.client_id if m else None,
                )
            )
        return ConsumerGroupDescription(
            d.group_id or group_id, d.state, d.protocol_type, d.protocol, d.generation, d.leader, members, offsets
        )

    async def delete_consumer_groups(self, group_ids: Iterable[str]) -> None:
        """Delete Empty groups and their committed offsets; raises the first failure after trying all."""
        ids = [group_ids] if isinstance(group_ids, str) else list(group_ids)
        results = await asyncio.gather(
            *(
                self._coordinators.call(
                    g,
                    "DeleteGroups",
                    ketch_pb2.DeleteGroupsRequest(group_ids=[g]),
                    lambda r: (r.results[0].error_code, r.results[0].error_message) if r.results else (0, ""),
                )
                for g in ids
            ),
            return_exceptions=True,
        )
        for group_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            for r in result.results:
                if r.error_code != ErrorCode.NONE:
                    raise group_error(r.error_code, r.error_message, group_id)

    async def list_consumer_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (the next offset to consume), per partition."""
        response = await self._coordinators.call(
            group_id,
            "OffsetFetch",
            ketch_pb2.OffsetFetchRequest(group_id=group_id),
        )
        if response.status.error_code != ErrorCode.NONE:
            raise group_error(response.status.error_code, response.status.error_message, group_id)
        return {
            TopicPartition(o.topic, o.partition): o.offset
            for o in response.offsets
            if o.offset >= 0 and o.error_code == ErrorCode.NONE
        }

    async def alter_consumer_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Set committed offsets of a group without members (NON_EMPTY_GROUP otherwise)."""
        request = ketch_pb2.ResetGroupOffsetsRequest(group_id=group_id)
        for tp, offset in offsets.items():
            topic, partition = tp
            offset = getattr(offset, "offset", offset)  # an OffsetAndMetadata works too
            if offset < 0 or partition < 0:
                raise ValueError(f"offset {offset} of {topic}-{partition}: offsets and partitions must be >= 0")
            request.offsets.add(topic=topic, partition=partition, offset=offset)
        response = await self._coordinators.call(group_id, "ResetGroupOffsets", request)
        if response.status.error_code != ErrorCode.NONE:
            raise group_error(response.status.error_code, response.status.error_message, group_id)

    async def close(self) -> None:
        await self._conn.close()
