"""The metadata image: an immutable picture of the cluster at one metadata offset.

Kafka's ``MetadataImage``: brokers, topics (by id and by name), their
partitions and configs, as of ``offset`` — the Raft index of the last record
replayed into it (-1 for the empty image). The offset is the image's
revision: work started from an older image is stale and is fenced by it.

Rules and invariants:
- Images are never changed in place; ``MetadataDelta`` (delta.py) replays
  records over an image and ``apply()`` builds the next one, sharing every
  untouched topic with the old image.
- Mappings are read-only views (``MappingProxyType``) over dicts nobody else
  holds; the dataclasses are frozen. Two images are equal when their offset,
  brokers and topics are equal (the by-name index is derived).
- A broker's registration carries every advertised listener (``endpoints``);
  ``host``/``port`` are its inter-broker listener's, what replica fetching and
  broker-to-broker channels dial. A registration recorded before listeners
  has no endpoints: ``endpoint(name)`` then answers its one address for any
  name (its broker had exactly one listener, so that is not another
  listener's address).
- A broker's epoch is the offset of its registration record. A registered
  broker starts fenced; it is unfenced once it heartbeats with that epoch and
  has caught up to it; it is fenced when its session expires; after a
  controlled shutdown its registration is over (``shut_down``) and only a new
  registration brings the id back.
- A partition satisfies, at every offset: replicas are distinct broker ids;
  the ISR is a non-empty subset of the replicas; the leader is an ISR member,
  or ``NO_LEADER`` (-1) when the partition is offline; a partition in unclean
  recovery (``recovering``, see election.py) is offline. Leader epoch and
  partition epoch never decrease (see election.py for when they move).
  During a reassignment (reassignment.py) ``adding`` and ``removing`` are
  disjoint sets of replicas and ``removing`` leaves at least one replica.
- ``next_producer_id``: every producer id below it was handed to a broker
  (producer_ids.py); it only grows.
- Configs: a topic's overrides live in its ``TopicImage`` (they go when the
  topic goes); dynamic broker configs (configs.py) live in ``broker_configs``,
  by resource name: ``""`` for every broker, else a node id. The controller
  reads ``min.insync.replicas`` and ``unclean.leader.election.enable`` as the
  topic's override, else the cluster-wide dynamic value, else its own static
  setting (``min_isr_default``, ``unclean_leader_election``); a per-broker
  value is for that broker's own uses only (Kafka's rule too).
- Derived figures for metrics (fenced brokers, offline and under-replicated
  partitions, leaders per broker) are computed once per image, on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TypeVar

from coordinator.metadata.acls import AclBinding
from coordinator.metadata.records import CLUSTER_WIDE, NO_LEADER, Endpoint, TopicIdPartition
from coordinator.metadata.scram import ScramCredential
from coordinator.metadata.topic_config import MIN_INSYNC_REPLICAS, UNCLEAN_LEADER_ELECTION_ENABLE

K = TypeVar("K")
V = TypeVar("V")


def frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """A read-only copy of ``items``."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class BrokerRegistration:
    broker_id: int
    epoch: int
    incarnation_id: str
    host: str
    port: int
    rack: str = ""
    fenced: bool = True
    shut_down: bool = False
    endpoints: tuple[Endpoint, ...] = ()  # empty: registered before listeners

    @property
    def usable(self) -> bool:
        """May lead partitions, join ISRs and receive new replicas."""
        return not self.fenced

    def endpoint(self, listener: str) -> tuple[str, int] | None:
        """(host, port) of the broker's listener named ``listener``; None when it has none by that name."""
        if not self.endpoints:
            return self.host, self.port
        for e in self.endpoints:
            if e.name == listener:
                return e.host, e.port
        return None


@dataclass(frozen=True)
class PartitionRegistration:
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0
    # Unclean recovery (KIP-966): offline until the controller picks the longest log.
    recovering: bool = False
    # An ongoing reassignment (KIP-455; reassignment.py): ``replicas`` is the target followed by
    # ``removing``; ``adding`` are the target replicas that are new.
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()

    @property
    def offline(self) -> bool:
        return self.leader == NO_LEADER

    @property
    def reassigning(self) -> bool:
        return bool(self.adding or self.removing)

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    def changed(
        self,
        leader: int | None = None,
        isr: Sequence[int] | None = None,
        recovering: bool | None = None,
        *,
        replicas: Sequence[int] | None = None,
        adding: Sequence[int] | None = None,
        removing: Sequence[int] | None = None,
    ) -> PartitionRegistration:
        """The state after one change: a new leader (even the same id, or
        NO_LEADER) bumps the leader epoch; every change bumps the partition epoch."""
        return PartitionRegistration(
            replicas=self.replicas if replicas is None else tuple(replicas),
            isr=self.isr if isr is None else tuple(isr),
            leader=self.leader if leader is None else leader,
            leader_epoch=self.leader_epoch if leader is None else self.leader_epoch + 1,
            partition_epoch=self.partition_epoch + 1,
            recovering=self.recovering if recovering is None else recovering,
            adding=self.adding if adding is None else tuple(adding),
            removing=self.removing if removing is None else tuple(removing),
        )

    def check(self) -> str | None:
        """Why this state breaks the partition invariants, or None."""
        if not self.replicas or len(set(self.replicas)) != len(self.replicas):
            return f"replicas {list(self.replicas)} must be distinct and non-empty"
        if not self.isr or len(set(self.isr)) != len(self.isr):
            return f"ISR {list(self.isr)} must be distinct and non-empty"
        if not set(self.isr) <= set(self.replicas):
            return f"ISR {list(self.isr)} is not a subset of replicas {list(self.replicas)}"
        if self.leader != NO_LEADER and self.leader not in self.isr:
            return f"leader {self.leader} is not in the ISR {list(self.isr)}"
        if self.recovering and self.leader != NO_LEADER:
            return f"leader {self.leader} while in unclean recovery (must be offline)"
        moving = self.adding + self.removing
        if len(set(moving)) != len(moving) or not set(moving) <= set(self.replicas):
            return f"adding {list(self.adding)} and removing {list(self.removing)} must be distinct replicas"
        if len(self.removing) >= len(self.replicas):
            return f"removing {list(self.removing)} would leave no replica of {list(self.replicas)}"
        return None


@dataclass(frozen=True)
class TopicImage:
    topic_id: str
    name: str
    configs: Mapping[str, str] = field(default_factory=frozen_map)
    partitions: Mapping[int, PartitionRegistration] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        for name in ("configs", "partitions"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, frozen_map(value))

    def min_isr(self, partition: PartitionRegistration, default: int) -> int:
        """The ISR floor: ``min.insync.replicas`` (the topic's, else ``default``), at most the replica count."""
        return min(int(self.configs.get(MIN_INSYNC_REPLICAS, default)), len(partition.replicas))


@dataclass(frozen=True)
class MetadataImage:
    offset: int = -1
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=frozen_map)
    topics: Mapping[str, TopicImage] = field(default_factory=frozen_map)  # by topic id
    next_producer_id: int = 0
    # Dynamic broker configs (Kafka broker keys -> values) by resource name: "" every broker, else a node id.
    broker_configs: Mapping[str, Mapping[str, str]] = field(default_factory=frozen_map)
    acls: Mapping[str, AclBinding] = field(default_factory=frozen_map)  # by id (acls.py)
    scram_credentials: Mapping[tuple[str, str], ScramCredential] = field(default_factory=frozen_map)  # scram.py
    topics_by_name: Mapping[str, TopicImage] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("brokers", "topics", "acls", "scram_credentials"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, frozen_map(value))
        if not isinstance(self.broker_configs, MappingProxyType):
            frozen = {name: frozen_map(keys) for name, keys in self.broker_configs.items() if keys}
            object.__setattr__(self, "broker_configs", frozen_map(frozen))
        object.__setattr__(self, "topics_by_name", frozen_map({t.name: t for t in self.topics.values()}))

    # -- configs the controller reads --

    def dynamic_default(self, key: str) -> str | None:
        """The cluster-wide dynamic broker config ``key`` (``ketch cluster config --set``), or None."""
        return self.broker_configs.get(CLUSTER_WIDE, {}).get(key)

    def min_isr_default(self, static: int) -> int:
        """``min.insync.replicas`` for topics without their own: the cluster-wide dynamic value, else ``static``."""
        value = self.dynamic_default(MIN_INSYNC_REPLICAS)  # the broker key is the topic key's name
        return static if value is None else int(value)

    def unclean_leader_election(self, topic: TopicImage) -> bool:
        """``unclean.leader.election.enable``: the topic's, else the cluster-wide dynamic value, else false."""
        value = topic.configs.get(UNCLEAN_LEADER_ELECTION_ENABLE) or self.dynamic_default(
            UNCLEAN_LEADER_ELECTION_ENABLE
        )
        return value == "true"

    # -- brokers --

    def broker(self, broker_id: int) -> BrokerRegistration | None:
        return self.brokers.get(broker_id)

    def is_usable(self, broker_id: int) -> bool:
        """Registered and unfenced: may lead, be in an ISR, get new replicas."""
        b = self.brokers.get(broker_id)
        return b is not None and b.usable

    @cached_property
    def usable_broker_ids(self) -> tuple[int, ...]:
        return tuple(sorted(i for i, b in self.brokers.items() if b.usable))

    @cached_property
    def fenced_broker_count(self) -> int:
        return sum(1 for b in self.brokers.values() if b.fenced)

    # -- topics and partitions --

    def topic(self, name: str) -> TopicImage | None:
        return self.topics_by_name.get(name)

    def partition(self, topic_id: str, partition: int) -> PartitionRegistration | None:
        t = self.topics.get(topic_id)
        return None if t is None else t.partitions.get(partition)

    def all_partitions(self) -> Iterator[tuple[TopicImage, int, PartitionRegistration]]:
        """Every partition, topics in name order, partitions in index order."""
        for name in sorted(self.topics_by_name):
            t = self.topics_by_name[name]
            for index in sorted(t.partitions):
                yield t, index, t.partitions[index]

    def partitions_of_broker(self, broker_id: int) -> Iterator[tuple[TopicImage, int, PartitionRegistration]]:
        """Partitions that list ``broker_id`` as a replica."""
        for t, index, p in self.all_partitions():
            if broker_id in p.replicas:
                yield t, index, p

    @cached_property
    def partition_count(self) -> int:
        return sum(len(t.partitions) for t in self.topics.values())

    @cached_property
    def offline_partition_count(self) -> int:
        return sum(1 for t in self.topics.values() for p in t.partitions.values() if p.offline)

    @cached_property
    def reassigning_partition_count(self) -> int:
        return sum(1 for t in self.topics.values() for p in t.partitions.values() if p.reassigning)

    @cached_property
    def under_replicated_partition_count(self) -> int:
        return sum(1 for t in self.topics.values() for p in t.partitions.values() if p.under_replicated)

    @cached_property
    def leaders_per_broker(self) -> Mapping[int, int]:
        """Partitions led by each registered broker (0 for brokers leading none)."""
        counts = dict.fromkeys(self.brokers, 0)
        for t in self.topics.values():
            for p in t.partitions.values():
                if p.leader != NO_LEADER:
                    counts[p.leader] = counts.get(p.leader, 0) + 1
        return frozen_map(counts)

    def leader_of(self, tp: TopicIdPartition) -> int:
        p = self.partition(tp.topic_id, tp.partition)
        return NO_LEADER if p is None else p.leader
