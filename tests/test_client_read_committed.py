"""read_committed on real RecordBatch v2 bytes (ketch/records.py ``decode_batches``'s ``aborted``).

The log is built the way brokers write it: transactional batches (attribute
bit 4, producer id and epoch), plain batches, and control batches (bits 4 and
5, base sequence -1, one EndTransactionMarker record: key int16 version +
int16 type, value int16 version + int32 coordinator epoch). The aborted list
is what a broker returns, ``(producer id, first offset)``; Kafka's rule drops
a producer's transactional batches from its first offset up to its abort
marker. Offsets a transaction holds (OffsetFetch UNSTABLE_OFFSET_COMMIT) are asked
again, never read as "nothing committed". A Hypothesis test builds random interleavings of committed, aborted
and plain writes and checks read_committed returns exactly the committed and
plain records, in offset order, and never a control record.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ketch.aio.group_offsets import UNSTABLE_OFFSET_COMMIT, GroupOffsets
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import KetchError
from ketch.group_rules import OffsetAndMetadata
from ketch.idempotence import restamp
from ketch.recordbatch import assign, parse_header
from ketch.records import ABORT_MARKER, COMMIT_MARKER, TopicPartition, decode_batches, new_builder

_ATTRIBUTES = struct.Struct(">h")


def data_batch(offset: int, values: list[bytes], pid: int = -1, transactional: bool = True) -> bytes:
    b = new_builder(0, 1 << 20, transactional)
    for i, v in enumerate(values):
        b.append(i, timestamp=1000, key=None, value=v, headers=[])
    if pid >= 0:
        b.set_producer_state(pid, 0, 0)
    return assign(bytes(b.build()), offset, 0)


def marker(offset: int, pid: int, kind: int) -> bytes:
    b = new_builder(0, 1 << 20, True)
    b.append(0, timestamp=1000, key=struct.pack(">hh", 0, kind), value=struct.pack(">hi", 0, 3), headers=[])
    raw = bytearray(bytes(b.build()))
    _ATTRIBUTES.pack_into(raw, 21, 0x30)
    return assign(restamp(bytes(raw), pid, 1, -1), offset, 0)


def values(data: bytes, aborted: list[tuple[int, int]] | None, min_offset: int = 0) -> list[bytes | None]:
    return [r.value for r in decode_batches("t", 0, data, min_offset, aborted).records]


def test_the_marker_bytes_are_a_control_batch() -> None:
    h = parse_header(marker(5, 9, ABORT_MARKER))
    assert (h.attributes & 0x30, h.producer_id, h.base_sequence, h.base_offset) == (0x30, 9, -1, 5)
    assert parse_header(data_batch(0, [b"a"], 9)).attributes & 0x30 == 0x10


def test_a_committed_transaction_is_read_and_its_marker_is_not() -> None:
    log = data_batch(0, [b"a", b"b"], pid=1) + marker(2, 1, COMMIT_MARKER)
    assert values(log, []) == [b"a", b"b"]
    assert values(log, None) == [b"a", b"b"]
    assert decode_batches("t", 0, log, 0, []).next_offset == 3


def test_an_aborted_transaction_is_dropped_under_read_committed_only() -> None:
    log = data_batch(0, [b"a", b"b"], pid=1) + marker(2, 1, ABORT_MARKER) + data_batch(3, [b"c"])
    assert values(log, [(1, 0)]) == [b"c"]
    assert values(log, None) == [b"a", b"b", b"c"]  # read_uncommitted sees everything but markers
    assert decode_batches("t", 0, log, 0, [(1, 0)]).next_offset == 4  # the fetch still advances


def test_interleaved_producers_and_a_new_transaction_after_the_abort_marker() -> None:
    log = (
        data_batch(0, [b"p1-aborted"], pid=1)
        + data_batch(1, [b"p2-committed"], pid=2)
        + data_batch(2, [b"p1-aborted-too"], pid=1)
        + marker(3, 1, ABORT_MARKER)
        + marker(4, 2, COMMIT_MARKER)
        + data_batch(5, [b"p1-next"], pid=1)  # p1's next transaction: not covered by (1, 0)
        + data_batch(6, [b"plain"], pid=1, transactional=False)
    )
    assert values(log, [(1, 0)]) == [b"p2-committed", b"p1-next", b"plain"]


def test_a_plain_batch_of_an_aborting_producer_is_kept() -> None:
    log = data_batch(0, [b"x"], pid=1) + data_batch(1, [b"idem"], pid=1, transactional=False) + marker(2, 1, 0)
    assert values(log, [(1, 0)]) == [b"idem"]


def test_two_aborted_transactions_of_one_producer() -> None:
    log = (
        data_batch(0, [b"a"], pid=1)
        + marker(1, 1, ABORT_MARKER)
        + data_batch(2, [b"b"], pid=1)
        + marker(3, 1, ABORT_MARKER)
        + data_batch(4, [b"c"], pid=1)
        + marker(5, 1, COMMIT_MARKER)
    )
    assert values(log, [(1, 2), (1, 0)]) == [b"c"]  # the broker's order does not matter


def test_a_fetch_starting_inside_an_aborted_transaction() -> None:
    log = data_batch(2, [b"a", b"b", b"c"], pid=1) + marker(5, 1, ABORT_MARKER) + data_batch(6, [b"d"])
    assert values(log, [(1, 0)], min_offset=3) == [b"d"]
    assert values(log, None, min_offset=3) == [b"b", b"c", b"d"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]], list[bytes]]:
    """A random log of three producers' transactions and plain writes, the broker's aborted list, and the
    values read_committed must return."""
    log: list[bytes] = []
    aborted: list[tuple[int, int]] = []
    expected: list[tuple[int, bytes]] = []
    open_txn: dict[int, tuple[int, list[tuple[int, bytes]]]] = {}  # pid -> first offset, its records
    offset = 0
    for step in range(draw(st.integers(0, 30))):
        pid = draw(st.integers(1, 3))
        action = draw(st.sampled_from(["write", "write", "plain", "commit", "abort"]))
        if action in ("write", "plain"):
            n = draw(st.integers(1, 3))
            vals = [f"{pid}-{step}-{i}".encode() for i in range(n)]
            log.append(data_batch(offset, vals, pid, transactional=action == "write"))
            recs = [(offset + i, v) for i, v in enumerate(vals)]
            if action == "plain":
                expected.extend(recs)
            else:
                first, held = open_txn.get(pid, (offset, []))
                open_txn[pid] = (first, held + recs)
            offset += n
        elif pid in open_txn:
            first, held = open_txn.pop(pid)
            log.append(marker(offset, pid, COMMIT_MARKER if action == "commit" else ABORT_MARKER))
            if action == "commit":
                expected.extend(held)
            else:
                aborted.append((pid, first))
            offset += 1
    # read_committed stops at the last stable offset: the first offset of the oldest open transaction
    lso = min((first for first, _ in open_txn.values()), default=offset)
    kept = b"".join(b for b in log if parse_header(b).base_offset < lso)
    return kept, aborted, [v for o, v in sorted(expected) if o < lso]


@settings(max_examples=300, deadline=None)
@given(histories())
def test_read_committed_returns_exactly_the_committed_and_plain_records(
    history: tuple[bytes, list[tuple[int, int]], list[bytes]],
) -> None:
    log, aborted, expected = history
    assert values(log, aborted) == expected


class _PendingOffsets:
    """A group coordinator whose OffsetFetch answers UNSTABLE_OFFSET_COMMIT ``unstable`` times, then 42."""

    def __init__(self, unstable: int) -> None:
        self.unstable = unstable
        self.calls = 0

    async def call(self, group_id: str, method: str, request: Any, **kw: Any) -> Any:
        self.calls += 1
        code = UNSTABLE_OFFSET_COMMIT if self.calls <= self.unstable else 0
        return pb.OffsetFetchResponse(
            offsets=[pb.CommittedPartitionOffset(topic="t", partition=0, offset=42, error_code=code)]  # type: ignore[arg-type]
        )


def _fetch(coordinator: _PendingOffsets, timeout: float) -> Any:
    offsets = GroupOffsets(
        coordinator,  # type: ignore[arg-type]
        "g",
        generation=lambda: ("", -1),
        on_fenced=lambda g, c: None,
        request_timeout=timeout,
        backoff=0.01,
    )
    return asyncio.run(offsets.fetch([TopicPartition("t", 0)]))


def test_offsets_pending_in_a_transaction_are_asked_again_not_taken_as_none() -> None:
    coordinator = _PendingOffsets(unstable=3)
    assert _fetch(coordinator, 5.0) == {TopicPartition("t", 0): OffsetAndMetadata(42, "", 0)}
    assert coordinator.calls == 4
    with pytest.raises(KetchError, match="open transaction"):
        _fetch(_PendingOffsets(unstable=10**6), 0.05)
