"""Replaying records: ``MetadataDelta`` turns an image plus committed records into the next image.

This is the only code that changes metadata state, and every node runs it
over the same records in the same order: the active controller (over its
own records as soon as it has appended them, see controller.py), standby
controllers and brokers (over committed entries). Kafka's ``MetadataDelta``.

Use:

    delta = MetadataDelta(image)
    delta.replay_batch(offset, records)      # one or more committed Raft entries
    new_image = delta.apply()
    changes = delta.local_changes(my_broker_id)

Rules (what each record does):
- ``RegisterBrokerRecord`` replaces any registration of that broker id. The
  new broker epoch is the record's offset (or its ``broker_epoch`` field,
  present only in snapshots); the broker starts fenced.
- ``BrokerFenceRecord`` sets the fenced flag of the registration whose epoch
  it names; ``shut_down`` ends that registration for good.
- ``TopicRecord`` adds a topic with no partitions; ``PartitionRecord`` adds
  one partition with its full state; ``RemoveTopicRecord`` drops a topic.
- ``PartitionChangeRecord``: a present ``leader`` (even -1 or the same id)
  sets the leader and bumps the leader epoch; a present ``isr`` replaces the
  ISR; present ``replicas``, ``adding_replicas`` and ``removing_replicas``
  replace those (a reassignment, reassignment.py); the partition epoch is
  bumped once per record.
- ``ProducerIdsRecord`` sets ``next_producer_id``; it must move it forward.
- ``ConfigRecord`` sets (value present) or deletes (absent) one key: of a
  topic's overrides (type 2, the topic by name; it must exist), or of the
  dynamic broker configs (type 4, ``""`` or a node id; a resource left with
  no keys disappears). Values are stored as the controller normalised them.
- ``AccessControlEntryRecord`` adds one ACL under its id (acls.py); a second record with the
  same id replaces it. ``RemoveAccessControlEntryRecord`` drops the ACL with its id (an unknown
  id is an error).
- ``UserScramCredentialRecord`` sets a user's credential for its mechanism (scram.py);
  ``RemoveUserScramCredentialRecord`` drops it (an unknown one is an error).
- ``NoOpRecord``, and a batch with no records (a Raft no-op entry), only
  advance the offset.
- Offsets never go backwards; the records of one batch share its offset.

A record that does not fit the state (an unknown broker, topic or partition,
a duplicate topic name or id, a fence naming a stale epoch, a change that
breaks a partition invariant) raises ``MetadataReplayError``. The active
controller only writes records computed from the state they will be replayed
on, so this means a bug or a corrupt log; the node must stop applying
metadata rather than diverge from the others (Kafka's fault handler).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from coordinator.metadata.acls import AclBinding
from coordinator.metadata.image import (
    BrokerRegistration,
    MetadataImage,
    PartitionRegistration,
    TopicImage,
    frozen_map,
)
from coordinator.metadata.local import LocalReplicaChanges, local_changes
from coordinator.metadata.records import BROKER_RESOURCE, TOPIC_RESOURCE, Endpoint, MetadataRecord, describe
from coordinator.metadata.scram import ScramCredential
from ketch.api.v1 import metadata_pb2 as pb


class MetadataReplayError(ValueError):
    """A record that cannot be applied to the current metadata state."""


@dataclass
class _TopicChange:
    topic_id: str
    name: str
    configs: Mapping[str, str]
    base: TopicImage | None  # None: created in this delta
    partitions: dict[int, PartitionRegistration] = field(default_factory=dict)

    def get(self, index: int) -> PartitionRegistration | None:
        if index in self.partitions:
            return self.partitions[index]
        return None if self.base is None else self.base.partitions.get(index)


class MetadataDelta:
    """Records replayed over ``image``; ``apply()`` gives the resulting image."""

    def __init__(self, image: MetadataImage) -> None:
        self.image = image
        self._offset = image.offset
        self._brokers: dict[int, BrokerRegistration] = {}  # changed registrations only
        self._topics: dict[str, _TopicChange] = {}  # created or changed, by id
        self._removed: dict[str, TopicImage] = {}  # removed topics that the base image had
        self._next_producer_id = image.next_producer_id
        self._broker_configs: dict[str, dict[str, str]] | None = None  # copied on the first change
        self._acls: dict[str, AclBinding] | None = None  # copied on the first change
        self._scram: dict[tuple[str, str], ScramCredential] | None = None  # copied on the first change
        self._applied: MetadataImage | None = None

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def changed_broker_ids(self) -> frozenset[int]:
        return frozenset(self._brokers)

    @property
    def changed_topic_ids(self) -> frozenset[str]:
        """Topics created, changed or removed by this delta."""
        return frozenset(self._topics) | frozenset(self._removed)

    @property
    def removed_topic_ids(self) -> frozenset[str]:
        return frozenset(self._removed)

    # -- current state (image + what was replayed so far) --

    def broker(self, broker_id: int) -> BrokerRegistration | None:
        if broker_id in self._brokers:
            return self._brokers[broker_id]
        return self.image.brokers.get(broker_id)

    def _topic(self, topic_id: str) -> _TopicChange | None:
        change = self._topics.get(topic_id)
        if change is not None:
            return change
        base = None if topic_id in self._removed else self.image.topics.get(topic_id)
        if base is None:
            return None
        change = _TopicChange(topic_id, base.name, base.configs, base)
        self._topics[topic_id] = change
        return change

    def _topic_named(self, name: str) -> _TopicChange | None:
        for change in self._topics.values():
            if change.name == name:
                return change
        base = self.image.topics_by_name.get(name)
        return None if base is None else self._topic(base.topic_id)

    def _name_taken(self, name: str) -> bool:
        base = self.image.topics_by_name.get(name)
        if base is not None and base.topic_id not in self._removed:
            return True
        return any(c.name == name for c in self._topics.values())

    # -- replay --

    def replay_batch(self, offset: int, records: Iterable[MetadataRecord]) -> None:
        """Replay one committed Raft entry. An entry with no records (Raft's own
        no-op) still advances the offset: the image offset is the last applied index."""
        self._check_offset(offset)
        for record in records:
            self.replay(offset, record)
        self._offset = offset
        self._applied = None

    def _check_offset(self, offset: int) -> None:
        if offset < self._offset:
            raise MetadataReplayError(f"offset {offset} is behind the metadata offset {self._offset}")

    def replay(self, offset: int, record: MetadataRecord) -> None:
        self._check_offset(offset)
        kind = record.WhichOneof("record")
        if kind == "register_broker":
            self._register(offset, record.register_broker)
        elif kind == "broker_fence":
            self._fence(record.broker_fence)
        elif kind == "topic":
            self._add_topic(record.topic)
        elif kind == "partition":
            self._add_partition(record.partition)
        elif kind == "partition_change":
            self._change_partition(record.partition_change)
        elif kind == "remove_topic":
            self._remove_topic(record.remove_topic)
        elif kind == "producer_ids":
            self._producer_ids(record.producer_ids)
        elif kind == "config":
            self._config(record.config)
        elif kind == "acl":
            self._changed_acls()[record.acl.id] = AclBinding.from_pb(record.acl)
        elif kind == "scram_credential":
            cred = ScramCredential.from_pb(record.scram_credential)
            self._changed_scram()[cred.key] = cred
        elif kind == "remove_scram_credential":
            gone = record.remove_scram_credential
            if self._changed_scram().pop((gone.name, gone.mechanism), None) is None:
                raise MetadataReplayError(f"no {gone.mechanism} credential of user {gone.name!r} to remove")
        elif kind == "remove_acl":
            if self._changed_acls().pop(record.remove_acl.id, None) is None:
                raise MetadataReplayError(f"remove_acl record for unknown ACL id {record.remove_acl.id!r}")
        elif kind != "no_op":
            raise MetadataReplayError(f"unknown record at offset {offset}: {describe(record)}")
        self._offset = offset
        self._applied = None

    def _changed_acls(self) -> dict[str, AclBinding]:
        if self._acls is None:
            self._acls = dict(self.image.acls)
        return self._acls

    def _changed_scram(self) -> dict[tuple[str, str], ScramCredential]:
        if self._scram is None:
            self._scram = dict(self.image.scram_credentials)
        return self._scram

    def _register(self, offset: int, rec: pb.RegisterBrokerRecord) -> None:
        if rec.broker_id < 0:
            raise MetadataReplayError(f"broker id {rec.broker_id} is negative")
        epoch = rec.broker_epoch if rec.HasField("broker_epoch") else offset
        self._brokers[rec.broker_id] = BrokerRegistration(
            broker_id=rec.broker_id,
            epoch=epoch,
            incarnation_id=rec.incarnation_id,
            host=rec.host,
            port=rec.port,
            rack=rec.rack,
            endpoints=tuple(Endpoint(e.name, e.host, e.port, e.security_protocol) for e in rec.endpoints),
        )

    def _fence(self, rec: pb.BrokerFenceRecord) -> None:
        current = self.broker(rec.broker_id)
        if current is None:
            raise MetadataReplayError(f"fence record for unregistered broker {rec.broker_id}")
        if current.epoch != rec.broker_epoch:
            raise MetadataReplayError(
                f"fence record for broker {rec.broker_id} epoch {rec.broker_epoch}; its epoch is {current.epoch}"
            )
        if rec.shut_down and not rec.fenced:
            raise MetadataReplayError(f"broker {rec.broker_id}: a shut-down registration cannot be unfenced")
        if current.shut_down and not rec.fenced:
            raise MetadataReplayError(f"broker {rec.broker_id} epoch {current.epoch} shut down; it cannot be unfenced")
        self._brokers[rec.broker_id] = replace(current, fenced=rec.fenced, shut_down=current.shut_down or rec.shut_down)

    def _add_topic(self, rec: pb.TopicRecord) -> None:
        if not rec.topic_id or not rec.name:
            raise MetadataReplayError("topic record without a name or id")
        if self._topic(rec.topic_id) is not None:
            raise MetadataReplayError(f"topic id {rec.topic_id} already exists")
        if self._name_taken(rec.name):
            raise MetadataReplayError(f"topic {rec.name!r} already exists")
        self._topics[rec.topic_id] = _TopicChange(rec.topic_id, rec.name, frozen_map(dict(rec.configs)), None)

    def _add_partition(self, rec: pb.PartitionRecord) -> None:
        change = self._topic(rec.topic_id)
        if change is None:
            raise MetadataReplayError(f"partition record for unknown topic id {rec.topic_id}")
        if rec.partition < 0 or change.get(rec.partition) is not None:
            raise MetadataReplayError(f"partition {change.name}-{rec.partition} exists or is negative")
        state = PartitionRegistration(
            replicas=tuple(rec.replicas),
            isr=tuple(rec.isr),
            leader=rec.leader,
            leader_epoch=rec.leader_epoch,
            partition_epoch=rec.partition_epoch,
            recovering=rec.recovering,
            adding=tuple(rec.adding_replicas),
            removing=tuple(rec.removing_replicas),
        )
        self._set_partition(change, rec.partition, state)

    def _change_partition(self, rec: pb.PartitionChangeRecord) -> None:
        change = self._topic(rec.topic_id)
        current = None if change is None else change.get(rec.partition)
        if change is None or current is None:
            raise MetadataReplayError(f"partition change for unknown partition {rec.topic_id}-{rec.partition}")
        state = current.changed(
            leader=rec.leader if rec.HasField("leader") else None,
            isr=list(rec.isr.values) if rec.HasField("isr") else None,
            recovering=rec.recovering if rec.HasField("recovering") else None,
            replicas=list(rec.replicas.values) if rec.HasField("replicas") else None,
            adding=list(rec.adding_replicas.values) if rec.HasField("adding_replicas") else None,
            removing=list(rec.removing_replicas.values) if rec.HasField("removing_replicas") else None,
        )
        self._set_partition(change, rec.partition, state)

    def _set_partition(self, change: _TopicChange, index: int, state: PartitionRegistration) -> None:
        problem = state.check()
        if problem is not None:
            raise MetadataReplayError(f"partition {change.name}-{index}: {problem}")
        change.partitions[index] = state

    def _remove_topic(self, rec: pb.RemoveTopicRecord) -> None:
        if self._topic(rec.topic_id) is None:
            raise MetadataReplayError(f"remove record for unknown topic id {rec.topic_id}")
        del self._topics[rec.topic_id]
        base = self.image.topics.get(rec.topic_id)
        if base is not None:
            self._removed[rec.topic_id] = base

    def _producer_ids(self, rec: pb.ProducerIdsRecord) -> None:
        if rec.next_producer_id <= self._next_producer_id:
            raise MetadataReplayError(
                f"producer ids record moves next_producer_id from {self._next_producer_id} "
                f"to {rec.next_producer_id}: it must grow"
            )
        self._next_producer_id = rec.next_producer_id

    def _config(self, rec: pb.ConfigRecord) -> None:
        if not rec.name:
            raise MetadataReplayError("config record without a key")
        value = rec.value if rec.HasField("value") else None
        if rec.resource_type == TOPIC_RESOURCE:
            change = self._topic_named(rec.resource_name)
            if change is None:
                raise MetadataReplayError(f"config record for unknown topic {rec.resource_name!r}")
            configs = dict(change.configs)
            _set_or_delete(configs, rec.name, value)
            change.configs = frozen_map(configs)
        elif rec.resource_type == BROKER_RESOURCE:
            if rec.resource_name and not rec.resource_name.isdecimal():
                raise MetadataReplayError(f'broker config record for {rec.resource_name!r}: not a node id or ""')
            if self._broker_configs is None:
                self._broker_configs = {name: dict(keys) for name, keys in self.image.broker_configs.items()}
            keys = self._broker_configs.setdefault(rec.resource_name, {})
            _set_or_delete(keys, rec.name, value)
            if not keys:
                del self._broker_configs[rec.resource_name]
        else:
            raise MetadataReplayError(f"config record for resource type {rec.resource_type}: not 2 or 4")

    # -- results --

    def apply(self) -> MetadataImage:
        """The image after every record replayed so far."""
        if self._applied is not None:
            return self._applied
        brokers: Mapping[int, BrokerRegistration] = self.image.brokers
        if self._brokers:
            brokers = {**self.image.brokers, **self._brokers}
        topics: Mapping[str, TopicImage] = self.image.topics
        if self._topics or self._removed:
            new_topics = {tid: t for tid, t in self.image.topics.items() if tid not in self._removed}
            for tid, change in self._topics.items():
                if change.base is not None and not change.partitions and change.configs is change.base.configs:
                    new_topics[tid] = change.base
                    continue
                parts = dict(change.base.partitions) if change.base is not None else {}
                parts.update(change.partitions)
                new_topics[tid] = TopicImage(tid, change.name, change.configs, parts)
            topics = new_topics
        configs = self.image.broker_configs if self._broker_configs is None else self._broker_configs
        self._applied = MetadataImage(
            offset=self._offset,
            brokers=brokers,
            topics=topics,
            next_producer_id=self._next_producer_id,
            broker_configs=configs,
            acls=self.image.acls if self._acls is None else self._acls,
            scram_credentials=self.image.scram_credentials if self._scram is None else self._scram,
        )
        return self._applied

    def local_changes(self, broker_id: int) -> LocalReplicaChanges:
        """What ``broker_id`` must do about its own replicas after this delta."""
        return local_changes(self.image, self.apply(), broker_id, self.changed_topic_ids)


def _set_or_delete(keys: dict[str, str], name: str, value: str | None) -> None:
    if value is None:
        keys.pop(name, None)
    else:
        keys[name] = value


def replay_batch(image: MetadataImage, offset: int, records: Iterable[MetadataRecord]) -> MetadataImage:
    """``image`` with one batch applied."""
    delta = MetadataDelta(image)
    delta.replay_batch(offset, records)
    return delta.apply()
