"""The consumer protocol: what consumers put in JoinGroup and SyncGroup (opaque to the broker).

The group coordinator treats protocol metadata and assignments as bytes
(protocol type ``consumer``, one protocol per assignor name, as in Kafka).
These are the bytes the consumer client writes and reads:

- Subscription (JoinGroup metadata): topics, the partitions the member owns
  now with the generation they were assigned in (cooperative protocol), and
  opaque user data.
- Assignment (SyncGroup, one per member, computed by the leader member):
  partitions and opaque user data.

Format: UTF-8 JSON with sorted keys and no spaces, a version field ``v``,
partitions as ``[topic, partition]`` pairs sorted, bytes as base64. Equal
values encode to equal bytes. Decoding never runs code; anything malformed
raises ``ValueError`` (also a document nested deeper than the parser's recursion limit, which
``json`` reports as ``RecursionError``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ketch.assignors.base import MemberSubscription, TopicPartition

PROTOCOL_TYPE = "consumer"
VERSION = 0


@dataclass(frozen=True)
class ConsumerAssignment:
    partitions: tuple[TopicPartition, ...]
    user_data: bytes = b""


def encode_subscription(sub: MemberSubscription, user_data: bytes = b"") -> bytes:
    return _dump(
        {
            "v": VERSION,
            "topics": sorted(sub.topics),
            "owned": _pairs(sub.owned),
            "generation": sub.generation,
            "user_data": base64.b64encode(user_data).decode(),
        }
    )


def decode_subscription(data: bytes) -> MemberSubscription:
    obj = _load(data)
    topics = obj.get("topics")
    generation = obj.get("generation", -1)
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics) or type(generation) is not int:
        raise ValueError("malformed consumer subscription")
    return MemberSubscription(frozenset(topics), _partitions(obj.get("owned", [])), generation)


def encode_assignment(partitions: Iterable[TopicPartition], user_data: bytes = b"") -> bytes:
    return _dump({"v": VERSION, "partitions": _pairs(partitions), "user_data": base64.b64encode(user_data).decode()})


def decode_assignment(data: bytes) -> ConsumerAssignment:
    if not data:
        return ConsumerAssignment(())
    obj = _load(data)
    try:
        user_data = base64.b64decode(obj.get("user_data", ""), validate=True)
    except (binascii.Error, TypeError) as e:
        raise ValueError("malformed consumer assignment user data") from e
    return ConsumerAssignment(_partitions(obj.get("partitions", [])), user_data)


def _pairs(partitions: Iterable[TopicPartition]) -> list[list[Any]]:
    return [[t, p] for t, p in sorted(partitions)]


def _partitions(raw: Any) -> tuple[TopicPartition, ...]:
    if not isinstance(raw, list):
        raise ValueError("malformed partition list")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and type(item[1]) is int):
            raise ValueError("malformed partition list")
        out.append(TopicPartition(item[0], item[1]))
    return tuple(out)


def dump_versioned(obj: dict[str, Any], version: int) -> bytes:
    """``obj`` with ``"v": version`` as canonical JSON bytes (sorted keys, no spaces): equal objects, equal bytes."""
    return json.dumps({**obj, "v": version}, sort_keys=True, separators=(",", ":")).encode()


def load_versioned(data: bytes, version: int, what: str) -> dict[str, Any]:
    """The JSON object in ``data``; ``ValueError`` naming ``what`` if it is not one, or not of ``version``."""
    try:
        obj = json.loads(data.decode())
    except (ValueError, RecursionError) as e:
        # ValueError covers invalid UTF-8, invalid JSON and integers longer than Python's
        # int_max_str_digits; RecursionError, arrays or objects nested deeper than the stack allows.
        raise ValueError(f"{what} is not JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(obj, dict) or obj.get("v") != version:
        raise ValueError(f"unsupported {what} version")
    return obj


def _dump(obj: dict[str, Any]) -> bytes:
    return dump_versioned(obj, VERSION)


def _load(data: bytes) -> dict[str, Any]:
    return load_versioned(data, VERSION, "consumer protocol bytes")
