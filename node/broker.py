"""The broker's replica manager: its own replicas, driven by the metadata image.

The controller quorum owns topics, partitions, replicas, leaders and ISRs;
this broker follows the committed metadata log (node/metadata_follower.py)
and, for each new image, acts only on the changes to its own replicas
(``local_changes``, Kafka's ``TopicsDelta.localChanges``):

- leader: open (or create) the replica's log and take the leader epoch and
  ISR from the image; produce and consumer fetches are served;
- follower: open (or create) the log, stop serving produce (a request for
  it gets NOT_LEADER_OR_FOLLOWER naming the leader) and let the replica
  fetcher (node/replica_fetcher.py) copy the leader's log;
- delete: the replica is gone (topic deleted or reassigned): stop it (a
  produce waiting for acks=all answers NOT_LEADER_OR_FOLLOWER; a fetch
  answer still in flight is ignored), close it and drop its whole key range.

The replica SET of a partition may change (a reassignment, KIP-455): a
broker added to it sees a new follower (an empty log that fetches from the
leader's log start), the leader sees a new state of the epoch it leads
(``Partition.become_leader`` takes the new replicas with the ISR), a broker
removed sees a delete. The leader throttles what it sends to adding replicas
(``throttle``, node/replication_throttle.py).

Topic settings are read from the current image at the moment of use
(node/catalog.py): a topic's overrides, then this broker's dynamic defaults
(``dynamic``, kept per image), then the node's settings. A leader's
``min.insync.replicas`` floor follows an altered config with the next image.

Nothing is applied until the image has reached this process's own broker
registration (see ``catch_up``); until then client Metadata requests are refused
as UNAVAILABLE so a client asks another broker (``metadata_caught_up``): a
restarted or wiped node's image may be old or empty, and a client would take
its answer as the whole cluster (Kafka opens its client listeners only after
this initial catch-up). Applying a change is idempotent: the state comes whole from the image, so
replaying an image the broker already applied does nothing new. Each local
replica has a node-local partition id (the u32 prefix of its RocksDB keys),
kept in the store's ``meta`` family under ``pid/<topic id>/<partition>`` and
never reused. After the first image, local replicas of topics the image no
longer has (deleted while this broker was down) are dropped.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping

from coordinator.metadata import MetadataImage, TopicIdPartition, local_changes
from coordinator.metadata.configs import dynamic_topic_defaults
from coordinator.metadata.image import TopicImage
from coordinator.metadata.topic_config import validate_topic_name
from ketch.errors import ErrorCode, KetchError, UnknownTopicOrPartitionError
from node.catalog import TopicConfig, effective_config
from node.config import NodeConfig
from node.lifecycle import BrokerEpoch
from node.replication_throttle import ReplicationThrottle
from replication.log import RetentionPolicy
from replication.partition import Partition, caught_up_to_registration
from replication.rocks_store import NodeStore

log = logging.getLogger("ketch.node.broker")
_PID_PREFIX = b"pid/"
_NEXT_PID = b"next-pid"
_U32 = struct.Struct(">I")
_NO_OVERRIDES: Mapping[str, str] = {}  # a topic not in the image
_TOPIC_CONFIGS_KEPT = 10_000  # topic_config forgets everything past this many overrides objects


def _pid_key(tp: TopicIdPartition) -> bytes:
    return _PID_PREFIX + tp.topic_id.encode() + b"/" + _U32.pack(tp.partition)


def _tp_of_pid_key(key: bytes) -> TopicIdPartition:
    """``_pid_key``'s inverse. The partition is the key's last four bytes, which may hold a ``/``
    themselves (partition 47 packs to ``00 00 00 2f``), so the key is cut by length, not at a ``/``."""
    return TopicIdPartition(key[len(_PID_PREFIX) : -5].decode(), _U32.unpack(key[-4:])[0])


class Broker:
    def __init__(
        self,
        config: NodeConfig,
        store: NodeStore,
        broker_epoch: BrokerEpoch,
        on_partition_change: Callable[[str, int], None],
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
    ) -> None:
        self.config = config
        self._clock_ms = clock_ms
        self.node_id = config.node_id
        self.store = store
        self.image = MetadataImage()
        # topic_config's memory: id(overrides) -> (overrides, dynamic defaults, their config)
        self._topic_configs: dict[int, tuple[Mapping[str, str], Mapping[str, str], TopicConfig]] = {}
        self._acted = MetadataImage()  # the image whose local changes were last applied
        self._broker_epoch = broker_epoch
        self._replicas: dict[TopicIdPartition, Partition] = {}
        # partition's memory of the replicas it found leading, for the image it found them in
        self._led: dict[tuple[str, int], tuple[Partition, TopicConfig]] = {}
        self._led_image = self.image
        self._on_partition_change = on_partition_change
        self._first_image = True
        self._dynamic: tuple[Mapping[str, Mapping[str, str]], Mapping[str, str]] = (self.image.broker_configs, {})
        self.throttle = ReplicationThrottle(config.reassignment_throttle_bytes, clock_ms)

    # -- metadata -------------------------------------------------------------

    @property
    def dynamic(self) -> Mapping[str, str]:
        """This broker's dynamic topic defaults (its own, then the cluster-wide ones), by topic config key."""
        configs, defaults = self._dynamic
        if configs is not self.image.broker_configs:
            configs = self.image.broker_configs
            defaults = dynamic_topic_defaults(self.image, self.node_id)
            self._dynamic = (configs, defaults)
        return defaults

    def on_metadata(self, old: MetadataImage, new: MetadataImage) -> None:
        self.image = new
        self.catch_up()
        # An altered min.insync.replicas reaches the leaders (configs unchanged keep their objects).
        every = old.broker_configs is not new.broker_configs
        for tp, part in list(self._replicas.items()):
            topic, before = new.topics.get(tp.topic_id), old.topics.get(tp.topic_id)
            if part.leader is None or topic is None:
                continue
            if every or before is None or before.configs is not topic.configs:
                part.leader.set_min_isr(self.topic_config(topic).min_insync_replicas)

    def topic_config(self, topic: TopicImage | None) -> TopicConfig:
        """The settings this broker applies to ``topic`` (a topic not in the image: its defaults alone).

        Remembered per overrides object while the dynamic defaults stay the same object: an image
        keeps a topic's configs object until they change, and follower fetches ask for every
        followed partition's config on every round (12% of a node's CPU with 1,000 partitions)."""
        overrides = topic.configs if topic is not None else _NO_OVERRIDES
        dynamic = self.dynamic
        cached = self._topic_configs.get(id(overrides))
        if cached is not None and cached[0] is overrides and cached[1] is dynamic:
            return cached[2]
        if len(self._topic_configs) >= _TOPIC_CONFIGS_KEPT:
            self._topic_configs.clear()
        config = effective_config(overrides, self.config, dynamic)
        self._topic_configs[id(overrides)] = (overrides, dynamic, config)
        return config

    def metadata_caught_up(self) -> bool:
        """Whether this broker's image includes its own registration (module rules)."""
        return caught_up_to_registration(self.image.offset, self._broker_epoch.value)

    def catch_up(self) -> None:
        """Apply the local changes from the last acted-on image to the current one — but only
        once the image includes this process's own registration (Kafka's initial catch-up):
        an older image may still name this broker the leader of an epoch whose tail it lost
        in a crash, and leading that epoch again would append different records under it."""
        new = self.image
        registered = self._broker_epoch.value
        if not caught_up_to_registration(new.offset, registered):
            return
        changes = local_changes(self._acted, new, self.node_id)
        self._acted = new
        now_ms = self._clock_ms()
        for tp, change in changes.leaders.items():
            state = change.state
            topic = new.topics.get(tp.topic_id)
            min_isr = self.topic_config(topic).min_insync_replicas if topic else 1
            self._open(tp, change.topic_name).become_leader(
                self.node_id,
                state.replicas,
                state.isr,
                state.leader_epoch,
                state.partition_epoch,
                lag_time_max_ms=self.config.replica_lag_time_max_ms,
                now_ms=now_ms,
                min_insync_replicas=min_isr,
            )
        for tp, change in changes.followers.items():
            self._open(tp, change.topic_name).become_follower(change.state.leader, change.state.leader_epoch)
        for tp, change in changes.deletes.items():
            self._drop(tp)
            self._on_partition_change(change.topic_name, tp.partition)
        if self._first_image:
            self._first_image = False
            self._drop_orphans(new)
        for tp in [*changes.leaders, *changes.followers]:
            self._on_partition_change(self._replicas[tp].topic, tp.partition)

    def _open(self, tp: TopicIdPartition, topic_name: str) -> Partition:
        part = self._replicas.get(tp)
        if part is not None:
            return part
        key = _pid_key(tp)
        raw = self.store.meta_get(key)
        if raw is None:
            next_raw = self.store.meta_get(_NEXT_PID)
            pid = _U32.unpack(next_raw)[0] if next_raw else 0
            self.store.meta_update({_NEXT_PID: _U32.pack(pid + 1), key: _U32.pack(pid)})
        else:
            pid = _U32.unpack(raw)[0]
        part = Partition(topic_name, tp.partition, self.store.partition_log(pid))
        self._replicas[tp] = part
        return part

    def _drop(self, tp: TopicIdPartition) -> None:
        part = self._replicas.pop(tp, None)
        if part is not None:
            part.become_follower(-1, -1)  # no epoch: waiting acks=all produce fails over, late fetch answers drop
            part.log.close()
        raw = self.store.meta_get(_pid_key(tp))
        if raw is not None:
            self.store.drop_partition(_U32.unpack(raw)[0])
            self.store.meta_delete(_pid_key(tp))

    def _drop_orphans(self, image: MetadataImage) -> None:
        for key, _ in self.store.meta_items(_PID_PREFIX):
            tp = _tp_of_pid_key(key)
            topic = image.topics.get(tp.topic_id)
            if topic is None or self.node_id not in topic.partitions.get(tp.partition, _NO_REPLICAS).replicas:
                log.info("dropping replica %s of a topic deleted while this broker was away", tp)
                self._drop(tp)

    def replica_logs(self, recovering_only: bool = False) -> dict[TopicIdPartition, tuple[int, int]]:
        """(latest epoch, log end offset) of every local replica in the store — or, with
        ``recovering_only``, of those the image shows in unclean recovery (for heartbeats)."""
        if recovering_only:
            tps = [
                TopicIdPartition(t.topic_id, index)
                for t, index, p in self.image.partitions_of_broker(self.node_id)
                if p.recovering
            ]
            pids: list[tuple[TopicIdPartition, bytes | None]] = [(tp, self.store.meta_get(_pid_key(tp))) for tp in tps]
        else:
            pids = [(_tp_of_pid_key(key), value) for key, value in self.store.meta_items(_PID_PREFIX)]
        out = {}
        for tp, pid in pids:
            part = self._replicas.get(tp)
            if part is not None:
                out[tp] = (part.log.latest_epoch, part.log.log_end_offset)
            elif pid is not None:
                plog = self.store.partition_log(_U32.unpack(pid)[0])
                out[tp] = (plog.latest_epoch, plog.log_end_offset)
            else:
                out[tp] = (-1, 0)  # no local log (a wiped disk): nothing to offer
        return out

    # -- lookups for the request handlers ----------------------------------

    def partitions(self) -> Iterable[Partition]:
        return list(self._replicas.values())

    def replicas(self) -> dict[TopicIdPartition, Partition]:
        return dict(self._replicas)

    def replicas_with_config(self) -> list[tuple[Partition, TopicConfig]]:
        """Each local replica with its topic's effective settings (the log cleaner's view)."""
        out = []
        for tp, part in list(self._replicas.items()):
            topic = self.image.topics.get(tp.topic_id)
            if topic is not None:
                out.append((part, self.topic_config(topic)))
        return out

    def topic(self, name: str) -> tuple[TopicImage, TopicConfig]:
        validate_topic_name(name)
        topic = self.image.topic(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return topic, self.topic_config(topic)

    def partition(self, name: str, index: int) -> tuple[Partition, TopicConfig]:
        """The local leader replica of ``name``-``index``, or the typed reason there is none.

        Remembered while the image is the same object and the replica still leads: a follower
        fetch asks for every partition it follows on every round (with 1,000 partitions, a
        third of them led here, the lookups were ~10% of a node's CPU)."""
        if self._led_image is not self.image:
            self._led.clear()
            self._led_image = self.image
        known = self._led.get((name, index))
        if known is not None and known[0].is_leader:
            return known
        topic, config = self.topic(name)
        state = topic.partitions.get(index)
        if state is None:
            raise UnknownTopicOrPartitionError(
                f"topic {name!r} has partitions 0..{len(topic.partitions) - 1}; there is no partition {index}"
            )
        if state.leader == -1:
            raise KetchError(
                f"{name}-{index} has no leader (no in-sync replica is alive)", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        part = self._replicas.get(TopicIdPartition(topic.topic_id, index))
        if state.leader != self.node_id or part is None or not part.is_leader:
            raise KetchError(
                f"node {self.node_id} is not the leader of {name}-{index}; node {state.leader} is "
                f"(leader epoch {state.leader_epoch})",
                code=ErrorCode.NOT_LEADER_OR_FOLLOWER,
            )
        self._led[(name, index)] = (part, config)
        return part, config

    def flush_on_append(self, part: Partition) -> bool:
        """Whether appends to ``part`` are fsynced (the topic's flush.messages=1)."""
        topic = self.image.topic(part.topic)
        return topic is not None and self.topic_config(topic).flush_messages == 1

    def apply_retention(self, now_ms: int) -> int:
        """One retention pass: retention.ms and retention.bytes trim only topics whose cleanup.policy
        has ``delete`` (Kafka never trims a compact-only topic by retention; its cleaner keeps each
        key's latest record instead). Idle producers are forgotten on every partition."""
        removed = 0
        for tp, part in list(self._replicas.items()):
            topic = self.image.topics.get(tp.topic_id)
            if topic is None:
                continue
            config = self.topic_config(topic)
            if config.deletes:
                policy = RetentionPolicy(config.retention_ms, config.retention_bytes)
                removed += part.log.apply_retention(policy, now_ms)
            part.expire_producers(now_ms, self.config.producer_id_expiration_ms)  # KIP-98's producer state
        return removed


class _NoReplicas:
    replicas: tuple[int, ...] = ()


_NO_REPLICAS = _NoReplicas()
