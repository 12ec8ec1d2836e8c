"""The ``__transaction_state`` record: key = transactional id, value = its whole ``TransactionMetadata``.

Every change to a transactional id is one record holding the id's complete
new state, so loading keeps the latest record per id, which is exactly the
record the topic's compaction by key keeps. A value of ``None`` would be a
tombstone (an expired id); nothing writes one yet (ids never expire, so the
compacted topic keeps one record per id ever used), and ``decode_record``
refuses it.

Format (as coordinator/groups/records.py): UTF-8 JSON, keys sorted, no
spaces, a version ``v`` in key and value. The key is a pure function of the
id, and equal metadata encodes to equal bytes (partitions and groups are
written sorted). Decoding is parsing only (never pickle, never code):
anything malformed — not JSON, another version, a missing field or one of the
wrong type (a bool is not an int), an unknown state, an epoch outside int16,
a key and value naming different ids, an ``ended_by`` that does not fit
the state, a ``transaction_version`` other than 1 or 2 or 1 outside a state a
client's EndTxn ended — raises ``ValueError``. ``transaction_version`` was
added later: a record without it is TV2 (everything before it bumped).
"""

from __future__ import annotations

from typing import Any, TypeVar

from coordinator.transactions.state import ENDED_BY, ENDING, MAX_EPOCH, TV1, TV2, TransactionMetadata, TxnState
from ketch.assignors.protocol import dump_versioned, load_versioned
from ketch.topic_partition import TopicPartition

VERSION = 0
_WHAT = "__transaction_state record"


def encode_record(meta: TransactionMetadata) -> tuple[bytes, bytes]:
    """(key bytes, value bytes) of the record that stores ``meta``."""
    key = dump_versioned({"transactional_id": meta.transactional_id}, VERSION)
    value = {
        "transactional_id": meta.transactional_id,
        "producer_id": meta.producer_id,
        "producer_epoch": meta.producer_epoch,
        "timeout_ms": meta.timeout_ms,
        "state": meta.state.value,
        "partitions": [[tp.topic, tp.partition] for tp in sorted(meta.partitions)],
        "group_ids": sorted(meta.group_ids),
        "start_time_ms": meta.start_time_ms,
        "last_update_ms": meta.last_update_ms,
        "ended_by": meta.ended_by,
        "transaction_version": meta.transaction_version,
    }
    return key, dump_versioned(value, VERSION)


def decode_record(key: bytes, value: bytes | None) -> TransactionMetadata:
    tid = _get(load_versioned(key, VERSION, _WHAT), "transactional_id", str)
    if value is None:
        raise ValueError(f"{_WHAT} for {tid!r} is a tombstone; this version writes none")
    v = load_versioned(value, VERSION, _WHAT)
    if _get(v, "transactional_id", str) != tid:
        raise ValueError(f"{_WHAT} key names {tid!r} but its value names {v['transactional_id']!r}")
    name = _get(v, "state", str)
    try:
        state = TxnState(name)
    except ValueError as e:
        raise ValueError(f"{_WHAT} for {tid!r} has an unknown state {name!r}") from e
    epoch = _get(v, "producer_epoch", int)
    if not 0 <= epoch <= MAX_EPOCH or _get(v, "producer_id", int) < 0 or _get(v, "timeout_ms", int) <= 0:
        raise ValueError(f"{_WHAT} for {tid!r} has a producer id, epoch or timeout out of range")
    ended_by = _get(v, "ended_by", str)
    if ended_by not in ENDED_BY or (ended_by != "") != (state in ENDING):
        raise ValueError(f"{_WHAT} for {tid!r} has ended_by {ended_by!r} in state {state}")
    version = _get(v, "transaction_version", int) if "transaction_version" in v else TV2
    if version not in (TV1, TV2) or (version == TV1 and ended_by != "client"):
        raise ValueError(f"{_WHAT} for {tid!r} has transaction_version {version} with ended_by {ended_by!r}")
    return TransactionMetadata(
        transactional_id=tid,
        producer_id=v["producer_id"],
        producer_epoch=epoch,
        timeout_ms=v["timeout_ms"],
        state=state,
        partitions=frozenset(_partition(p) for p in _get(v, "partitions", list)),
        group_ids=frozenset(_string(g) for g in _get(v, "group_ids", list)),
        start_time_ms=_get(v, "start_time_ms", int),
        last_update_ms=_get(v, "last_update_ms", int),
        ended_by=ended_by,
        transaction_version=version,
    )


T = TypeVar("T")


def _get(obj: dict[str, Any], name: str, kind: type[T]) -> T:
    value = obj.get(name)
    if type(value) is not kind:  # exact: bool is not an int here
        raise ValueError(f"{_WHAT} field {name!r} is missing or not {kind.__name__}")
    return value


def _partition(item: object) -> TopicPartition:
    if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is str and type(item[1]) is int):
        raise ValueError(f"{_WHAT} partition {item!r} is not [topic, partition]")
    return TopicPartition(item[0], item[1])


def _string(item: object) -> str:
    if type(item) is not str:
        raise ValueError(f"{_WHAT} group id {item!r} is not a string")
    return item
