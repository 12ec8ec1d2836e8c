"""The consumer decodes a fetched answer one batch at a time, as records are handed out.

Decoding a whole answer at once (up to ``max_partition_fetch_bytes``: ~9,000 records of 100 B)
kept every record alive until the caller got to it; now only the batch being handed out is
decoded (ketch/aio/fetcher.py has the rule and the measurement).
"""

from __future__ import annotations

import struct
from typing import Any

import crc32c
import pytest

from ketch.aio.fetcher import EARLIEST, Fetcher, PartitionState
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import CorruptMessageError
from ketch.records import TopicPartition, build_batch

TP = TopicPartition("t", 0)


def batch_at(offset: int, values: list[bytes]) -> bytearray:
    raw = bytearray(build_batch([(None, v) for v in values]))
    struct.pack_into(">q", raw, 0, offset)
    return raw


def fetcher(max_poll_records: int = 500) -> Fetcher:
    return Fetcher(
        conn=None,  # type: ignore[arg-type]  # _handle and drain never use it
        auto_offset_reset="earliest",
        fetch_min_bytes=1,
        fetch_max_wait_ms=10,
        fetch_max_bytes=1 << 20,
        max_partition_fetch_bytes=1 << 20,
        max_poll_records=max_poll_records,
        retry_backoff_ms=10,
        request_timeout_ms=1000,
    )


def answer(*batches: bytes | bytearray) -> pb.FetchPartitionResult:
    return pb.FetchPartitionResult(
        topic="t", partition=0, records=b"".join(bytes(b) for b in batches), high_watermark=99
    )


def state(f: Fetcher, fetch_offset: int) -> PartitionState:
    st = PartitionState(EARLIEST)
    st.fetch_offset = fetch_offset
    f.states[TP] = st
    return st


def offsets(drained: dict[TopicPartition, list[Any]]) -> list[int]:
    return [r.offset for r in drained.get(TP, [])]


def test_only_the_batch_being_handed_out_is_decoded() -> None:
    f = fetcher()
    st = state(f, 2)  # the first batch starts before the fetch offset
    f._handle(TP, st, answer(*(batch_at(4 * i, [b"v%d" % (4 * i + j) for j in range(4)]) for i in range(3))))
    assert [r.offset for r in st.buffer] == [2, 3]  # the first batch only, from the fetch offset
    assert st.buffered == 2 + 8 and len(st.undecoded) == 2
    assert st.position == 2 and st.fetch_offset == 12
    assert offsets(f.drain(3)) == [2, 3, 4]  # across a batch boundary
    assert st.position == 5 and st.buffered == 7
    assert offsets(f.drain(100)) == [5, 6, 7, 8, 9, 10, 11]
    assert not st.buffer and not st.undecoded and st.buffered == 0 and st.position == 12
    f._handle(TP, st, answer(batch_at(12, [b"x"])))
    assert [(r.offset, r.value) for r in f.drain(10)[TP]] == [(12, b"x")]


def test_a_batch_that_does_not_decode_fails_the_partition_there() -> None:
    f = fetcher()
    st = state(f, 0)
    bad = batch_at(3, [b"d", b"e"])
    struct.pack_into(">i", bad, 57, 3)  # records_count 3, two records present
    struct.pack_into(">I", bad, 17, crc32c.crc32c(bytes(bad[21:])))  # behind a good CRC
    f._handle(TP, st, answer(batch_at(0, [b"a", b"b", b"c"]), bad, batch_at(5, [b"f"])))
    assert offsets(f.drain(100)) == [0, 1, 2]  # what came before it is handed out
    assert st.position == 3 and st.error is not None  # refetched from the bad batch, not past it
    with pytest.raises(CorruptMessageError, match="offset 3 of t-0 has records that do not decode"):
        f.raise_error()
    assert not st.undecoded and st.buffered == 0


def test_seek_drops_undecoded_batches_and_prefetch_counts_them() -> None:
    f = fetcher(max_poll_records=5)
    st = state(f, 0)
    f._handle(TP, st, answer(batch_at(0, [b"a", b"b"]), batch_at(2, [b"c", b"d", b"e", b"f"])))
    assert len(st.buffer) == 2 and st.buffered == 6 >= f.max_poll_records  # no prefetch: enough fetched
    st.seek(40)
    assert not st.buffer and not st.undecoded and st.buffered == 0 and st.position == 40
