"""Dynamic configs: incrementally altered topic overrides and dynamic broker configs (Kafka's KIP-339).

Two kinds of resource, named by Kafka's ConfigResource type (records.py):
- a topic (``TOPIC_RESOURCE``, its name): its overrides, kept in the topic's
  image; they go with the topic when it is deleted;
- the brokers (``BROKER_RESOURCE``): ``""`` (``CLUSTER_WIDE``) sets a value
  for every broker, a node id for that broker alone.

Where a topic's value comes from, most specific first (Kafka's ConfigSource):
the topic's override (DYNAMIC_TOPIC_CONFIG), the dynamic value for the
broker that uses it (DYNAMIC_BROKER_CONFIG), the cluster-wide dynamic value
(DYNAMIC_DEFAULT_BROKER_CONFIG), the node's own setting
(STATIC_BROKER_CONFIG), Ketch's default (DEFAULT_CONFIG). Each broker
resolves this at the moment of use (node/catalog.py), so a change reaches
every topic without an override once the broker's image holds it. The
controller reads only the layers it can see: override, cluster-wide, its own
static setting (image.py: ``min_isr_default``, ``unclean_leader_election``).

The dynamic broker keys are Kafka's broker names, each the default of one
topic config (``DYNAMIC_BROKER_CONFIGS``), so every topic config has one:
log.retention.ms, log.retention.bytes, message.max.bytes,
log.flush.interval.messages, min.insync.replicas, log.cleanup.policy,
log.cleaner.delete.retention.ms, log.cleaner.min.compaction.lag.ms,
log.cleaner.min.cleanable.ratio, unclean.leader.election.enable. Other broker
settings (ports, directories, timeouts) are static: they need a restart.

Rules of ``incremental_alter``:
- Every resource gets a result, an error code and a message; a refused
  resource writes nothing and never fails the others. A resource named
  twice, or a key named twice in one resource, is INVALID_REQUEST.
- Topic: it must exist (UNKNOWN_TOPIC_OR_PARTITION). A SET value follows the
  rules of topic creation (topic_config.py) and is stored normalised; an
  unknown key or a bad value is INVALID_CONFIG naming the key. DELETE removes
  the override (the value falls back to the next source down).
- Broker: the name is ``""`` or a node id (INVALID_REQUEST otherwise) of a
  registered broker (BROKER_ID_NOT_REGISTERED). Only the dynamic broker keys
  (INVALID_CONFIG naming them); a value follows the rules of the topic config
  it defaults.
- Records: one ConfigRecord per key whose stored value changes (a SET to the
  same value and a DELETE of an absent key write nothing). ``validate_only``
  checks everything and writes nothing.
- When the records change a topic's ``unclean.leader.election.enable`` or
  ``min.insync.replicas`` as the controller reads them, each partition of it
  is re-run through the election rules (election.py) in the same batch, as
  fencing would have run them under the new values: an offline or recovering
  partition that may now elect uncleanly gets a leader (the issue's case: a
  partition stuck in unclean recovery), and fenced ISR members kept only for
  a floor that dropped leave the ISR.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from coordinator.metadata import records as rec
from coordinator.metadata.delta import replay_batch
from coordinator.metadata.election import build_change
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.records import BROKER_RESOURCE, CLUSTER_WIDE, TOPIC_RESOURCE, MetadataRecord
from coordinator.metadata.results import ControllerResult
from coordinator.metadata.topic_config import (
    CLEANUP_POLICY,
    DELETE_RETENTION_MS,
    FLUSH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MIN_CLEANABLE_DIRTY_RATIO,
    MIN_COMPACTION_LAG_MS,
    MIN_INSYNC_REPLICAS,
    RETENTION_BYTES,
    RETENTION_MS,
    SUPPORTED_CONFIGS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
    validate_topic_configs,
)
from ketch.errors import ErrorCode, KetchError

# Dynamic broker key (Kafka's name) -> the topic config it is the default of.
DYNAMIC_BROKER_CONFIGS: dict[str, str] = {
    "log.retention.ms": RETENTION_MS,
    "log.retention.bytes": RETENTION_BYTES,
    "message.max.bytes": MAX_MESSAGE_BYTES,
    "log.flush.interval.messages": FLUSH_MESSAGES,
    "min.insync.replicas": MIN_INSYNC_REPLICAS,
    "log.cleanup.policy": CLEANUP_POLICY,
    "log.cleaner.delete.retention.ms": DELETE_RETENTION_MS,
    "log.cleaner.min.compaction.lag.ms": MIN_COMPACTION_LAG_MS,
    "log.cleaner.min.cleanable.ratio": MIN_CLEANABLE_DIRTY_RATIO,
    "unclean.leader.election.enable": UNCLEAN_LEADER_ELECTION_ENABLE,
}
BROKER_KEY_OF = {topic_key: broker_key for broker_key, topic_key in DYNAMIC_BROKER_CONFIGS.items()}
_NODE_ID = re.compile(r"^[0-9]+$")


class ConfigSource(IntEnum):
    """Where a value comes from, most specific first (Kafka's ConfigSource; the proto's numbers)."""

    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


Layer = tuple[ConfigSource, Mapping[str, str]]  # one source's values, by topic config key


@dataclass(frozen=True)
class ConfigResource:
    type: int  # TOPIC_RESOURCE or BROKER_RESOURCE
    name: str  # a topic name; a node id or "" for brokers


@dataclass(frozen=True)
class ConfigChange:
    name: str
    value: str | None  # None: delete the key


@dataclass(frozen=True)
class AlterConfigsResource:
    resource: ConfigResource
    changes: tuple[ConfigChange, ...]


@dataclass(frozen=True)
class AlterConfigsResult:
    resource: ConfigResource
    error_code: ErrorCode = ErrorCode.NONE
    error_message: str = ""


@dataclass(frozen=True)
class AlterConfigsResponse:
    results: tuple[AlterConfigsResult, ...]


# -- the command --


def incremental_alter(
    image: MetadataImage,
    resources: Sequence[AlterConfigsResource],
    validate_only: bool,
    max_request_bytes: int,
    static_min_isr: int,
) -> ControllerResult[AlterConfigsResponse]:
    """The records for every acceptable resource, and a result for each (see the rules above)."""
    counts: dict[ConfigResource, int] = {}
    for r in resources:
        counts[r.resource] = counts.get(r.resource, 0) + 1
    records: list[MetadataRecord] = []
    results = []
    for r in resources:
        try:
            if counts[r.resource] > 1:
                raise KetchError(f"{_describe(r.resource)} is named more than once", code=ErrorCode.INVALID_REQUEST)
            changes = _unique(r)
            if r.resource.type == TOPIC_RESOURCE:
                found = _alter_topic(image, r.resource.name, changes, max_request_bytes)
            elif r.resource.type == BROKER_RESOURCE:
                found = _alter_broker(image, r.resource.name, changes, max_request_bytes)
            else:
                raise KetchError(
                    f"resource type {r.resource.type} is not a topic ({TOPIC_RESOURCE}) or brokers ({BROKER_RESOURCE})",
                    code=ErrorCode.INVALID_REQUEST,
                )
        except KetchError as exc:
            results.append(AlterConfigsResult(r.resource, exc.code, exc.message))
            continue
        records += found
        results.append(AlterConfigsResult(r.resource))
    response = AlterConfigsResponse(tuple(results))
    if validate_only or not records:
        return ControllerResult([], response)
    after = replay_batch(image, image.offset, records)
    return ControllerResult(records + reaction_records(image, after, static_min_isr), response)


def _describe(resource: ConfigResource) -> str:
    if resource.type == TOPIC_RESOURCE:
        return f"topic {resource.name!r}"
    if resource.type == BROKER_RESOURCE:
        return "the cluster-wide broker configs" if resource.name == CLUSTER_WIDE else f"broker {resource.name}"
    return f"resource {resource.type}/{resource.name!r}"


def _unique(r: AlterConfigsResource) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for change in r.changes:
        if change.name in out:
            raise KetchError(
                f"{_describe(r.resource)}: config {change.name!r} is named more than once",
                code=ErrorCode.INVALID_REQUEST,
            )
        out[change.name] = change.value
    return out


def _alter_topic(
    image: MetadataImage, name: str, changes: Mapping[str, str | None], max_request_bytes: int
) -> list[MetadataRecord]:
    topic = image.topic(name)
    if topic is None:
        raise KetchError(f"topic {name!r} does not exist", code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    sets = validate_topic_configs({k: v for k, v in changes.items() if v is not None}, max_request_bytes)
    deletes = [k for k, v in changes.items() if v is None]
    for key in deletes:
        if key not in SUPPORTED_CONFIGS:
            raise KetchError(
                f"unknown topic config {key!r}; supported: {', '.join(SUPPORTED_CONFIGS)}",
                code=ErrorCode.INVALID_CONFIG,
            )
    out = [rec.config(TOPIC_RESOURCE, name, k, v) for k, v in sets.items() if topic.configs.get(k) != v]
    return out + [rec.config(TOPIC_RESOURCE, name, k, None) for k in deletes if k in topic.configs]


def _alter_broker(
    image: MetadataImage, name: str, changes: Mapping[str, str | None], max_request_bytes: int
) -> list[MetadataRecord]:
    if name != CLUSTER_WIDE:
        if not _NODE_ID.match(name):
            raise KetchError(
                f'broker resource {name!r} is not a node id or "" (every broker)', code=ErrorCode.INVALID_REQUEST
            )
        name = str(int(name))
        if int(name) not in image.brokers:
            raise KetchError(
                f"broker {name} is not registered (registered: {sorted(image.brokers)})",
                code=ErrorCode.BROKER_ID_NOT_REGISTERED,
            )
    current = image.broker_configs.get(name, {})
    out = []
    for key, value in changes.items():
        topic_key = DYNAMIC_BROKER_CONFIGS.get(key)
        if topic_key is None:
            raise KetchError(
                f"{key!r} is not a dynamic broker config; accepted: {', '.join(DYNAMIC_BROKER_CONFIGS)}",
                code=ErrorCode.INVALID_CONFIG,
            )
        if value is not None:
            try:
                value = validate_topic_configs({topic_key: value}, max_request_bytes)[topic_key]
            except KetchError as exc:
                raise KetchError(f"{key} is the default of {topic_key}: {exc.message}", code=exc.code) from None
        if current.get(key) != value:
            out.append(rec.config(BROKER_RESOURCE, name, key, value))
    return out


def reaction_records(before: MetadataImage, after: MetadataImage, static_min_isr: int) -> list[MetadataRecord]:
    """Partition changes ``after``'s configs call for where the controller's reading of
    ``unclean.leader.election.enable`` or ``min.insync.replicas`` differs from ``before``'s."""
    floor_before, floor_after = before.min_isr_default(static_min_isr), after.min_isr_default(static_min_isr)
    out = []
    for t, index, p in after.all_partitions():
        old = before.topics.get(t.topic_id)
        unclean = after.unclean_leader_election(t)
        floor = t.min_isr(p, floor_after)
        if old is not None and unclean == before.unclean_leader_election(old) and floor == old.min_isr(p, floor_before):
            continue
        change = build_change(t.topic_id, index, p, after.is_usable, unclean=unclean, min_isr=floor)
        if change is not None:
            out.append(change)
    return out


# -- reading: the layers of a topic's value --


def dynamic_layers(image: MetadataImage, broker_id: int) -> list[Layer]:
    """The dynamic broker layers as ``broker_id`` sees them, by topic config key: its own, then the cluster's."""
    own = image.broker_configs.get(str(broker_id), {})
    cluster = image.broker_configs.get(CLUSTER_WIDE, {})
    return [
        (ConfigSource.DYNAMIC_BROKER_CONFIG, _by_topic_key(own)),
        (ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, _by_topic_key(cluster)),
    ]


def dynamic_topic_defaults(image: MetadataImage, broker_id: int) -> dict[str, str]:
    """The dynamic defaults ``broker_id`` applies to topics, by topic config key (its own win)."""
    out: dict[str, str] = {}
    for _, values in reversed(dynamic_layers(image, broker_id)):
        out.update(values)
    return out


def _by_topic_key(values: Mapping[str, str]) -> dict[str, str]:
    return {DYNAMIC_BROKER_CONFIGS[k]: v for k, v in values.items() if k in DYNAMIC_BROKER_CONFIGS}


def resolve(key: str, layers: Sequence[Layer]) -> tuple[str, ConfigSource]:
    """The value of topic config ``key`` from the first layer that has it, and that layer's source."""
    for source, values in layers:
        if key in values:
            return values[key], source
    raise KeyError(f"no layer holds {key!r}")
