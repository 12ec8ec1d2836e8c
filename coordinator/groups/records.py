"""Records of the offsets log: what a group coordinator writes, and their byte format.

Two record kinds share the internal offsets topic (Kafka's
``__consumer_offsets``), which is compacted by key:

- offset commit: key (group, topic, partition) → ``CommittedOffset``;
- group metadata: key (group) → ``GroupMetadataValue`` (generation, protocol,
  leader, members with their subscription and assignment), written when a
  generation gets its assignment (Stable) or ends with no members (Empty).

A value of ``None`` is a tombstone: the offset, or the group, is deleted.

Format: UTF-8 JSON, keys sorted, no spaces, a ``type`` in keys and a version
``v`` in both, bytes as base64. The key is a pure function of the key fields,
so compaction keeps the latest value per key; equal records are equal bytes.
Decoding is parsing only (never pickle, never code); anything malformed
raises ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, TypeVar

from ketch.assignors.protocol import dump_versioned, load_versioned

VERSION = 0
NO_OFFSET = -1


@dataclass(frozen=True)
class OffsetCommitKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class CommittedOffset:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp_ms: int = 0


@dataclass(frozen=True)
class GroupMetadataKey:
    group_id: str


@dataclass(frozen=True)
class MemberMetadata:
    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    metadata: bytes  # the member's metadata for the group's selected protocol
    assignment: bytes


@dataclass(frozen=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str
    leader: str
    members: tuple[MemberMetadata, ...]


@dataclass(frozen=True)
class GroupRecord:
    key: OffsetCommitKey | GroupMetadataKey
    value: CommittedOffset | GroupMetadataValue | None  # None: tombstone

    @property
    def group_id(self) -> str:
        return self.key.group_id


def encode_record(record: GroupRecord) -> tuple[bytes, bytes | None]:
    """(key bytes, value bytes or None for a tombstone)."""
    key, value = record.key, record.value
    if isinstance(key, OffsetCommitKey):
        key_obj: dict[str, Any] = {
            "type": "offset",
            "group": key.group_id,
            "topic": key.topic,
            "partition": key.partition,
        }
        if value is not None and not isinstance(value, CommittedOffset):
            raise TypeError("an offset key needs a CommittedOffset value")
    else:
        key_obj = {"type": "group", "group": key.group_id}
        if value is not None and not isinstance(value, GroupMetadataValue):
            raise TypeError("a group key needs a GroupMetadataValue value")
    return _dump(key_obj), None if value is None else _dump(_value_obj(value))


def decode_record(key: bytes, value: bytes | None) -> GroupRecord:
    k = _load(key)
    kind = _get(k, "type", str)
    if kind == "offset":
        okey = OffsetCommitKey(_get(k, "group", str), _get(k, "topic", str), _get(k, "partition", int))
        return GroupRecord(okey, None if value is None else _offset_value(_load(value)))
    if kind == "group":
        gkey = GroupMetadataKey(_get(k, "group", str))
        return GroupRecord(gkey, None if value is None else _group_value(_load(value)))
    raise ValueError(f"unknown offsets-log record type {kind!r}")


def _value_obj(value: CommittedOffset | GroupMetadataValue) -> dict[str, Any]:
    if isinstance(value, CommittedOffset):
        return {
            "offset": value.offset,
            "leader_epoch": value.leader_epoch,
            "metadata": value.metadata,
            "commit_timestamp_ms": value.commit_timestamp_ms,
        }
    return {
        "protocol_type": value.protocol_type,
        "generation": value.generation,
        "protocol": value.protocol,
        "leader": value.leader,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "session_timeout_ms": m.session_timeout_ms,
                "rebalance_timeout_ms": m.rebalance_timeout_ms,
                "metadata": base64.b64encode(m.metadata).decode(),
                "assignment": base64.b64encode(m.assignment).decode(),
            }
            for m in value.members
        ],
    }


def _offset_value(v: dict[str, Any]) -> CommittedOffset:
    return CommittedOffset(
        _get(v, "offset", int),
        _get(v, "leader_epoch", int),
        _get(v, "metadata", str),
        _get(v, "commit_timestamp_ms", int),
    )


def _group_value(v: dict[str, Any]) -> GroupMetadataValue:
    members = []
    for m in _get(v, "members", list):
        if not isinstance(m, dict):
            raise ValueError("malformed group member")
        members.append(
            MemberMetadata(
                _get(m, "member_id", str),
                _get(m, "client_id", str),
                _get(m, "client_host", str),
                _get(m, "session_timeout_ms", int),
                _get(m, "rebalance_timeout_ms", int),
                _b64(_get(m, "metadata", str)),
                _b64(_get(m, "assignment", str)),
            )
        )
    return GroupMetadataValue(
        _get(v, "protocol_type", str),
        _get(v, "generation", int),
        _get(v, "protocol", str),
        _get(v, "leader", str),
        tuple(members),
    )


T = TypeVar("T")


def _get(obj: dict[str, Any], name: str, kind: type[T]) -> T:
    value = obj.get(name)
    if type(value) is not kind:  # exact: bool is not an int here
        raise ValueError(f"offsets-log record field {name!r} is missing or not {kind.__name__}")
    return value


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError("malformed base64 in offsets-log record") from e


def _dump(obj: dict[str, Any]) -> bytes:
    return dump_versioned(obj, VERSION)


def _load(data: bytes) -> dict[str, Any]:
    return load_versioned(data, VERSION, "offsets-log record")
