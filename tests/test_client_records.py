"""RecordBatch v2 codec (aiokafka's compiled builder/reader) and record types."""

from __future__ import annotations

import struct

import crc32c
import pytest

from ketch.errors import CorruptMessageError
from ketch.recordbatch import assign, split_batches
from ketch.records import (
    COMPRESSION_CODES,
    ConsumerRecord,
    RecordMetadata,
    TopicPartition,
    build_batch,
    compression_code,
    decode_batches,
    estimate_record_size,
    new_builder,
)

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_compression(codec: str | None) -> None:
    pairs = [(None if i % 3 == 0 else b"k%d" % i, b"value-%d" % i * 20) for i in range(200)]
    raw = build_batch(pairs, compression=codec, timestamp=1_700_000_000_000, headers=[("h", b"v")])
    ((header, _),) = split_batches(raw)  # the broker's own checks accept it
    assert header.compression == (codec or "none")
    assert header.records_count == 200
    stored = assign(raw, base_offset=1000, leader_epoch=3)
    decoded = decode_batches("t", 2, stored, min_offset=0)
    assert decoded.next_offset == 1200
    assert [(r.key, r.value) for r in decoded.records] == pairs
    first = decoded.records[0]
    assert (first.topic, first.partition, first.offset, first.timestamp) == ("t", 2, 1000, 1_700_000_000_000)
    assert first.headers == [("h", b"v")]


def test_compression_actually_shrinks_repetitive_data() -> None:
    pairs = [(None, b"a" * 1000) for _ in range(50)]
    sizes = {codec: len(build_batch(pairs, compression=codec)) for codec in CODECS}
    for codec in CODECS[1:]:
        assert sizes[codec] < sizes[None] / 5, (codec, sizes)


def test_compression_names() -> None:
    assert [compression_code(c) for c in CODECS] == [0, 1, 2, 3, 4]
    assert compression_code("none") == 0 and compression_code("GZIP") == 1
    assert set(COMPRESSION_CODES.values()) == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="brotli"):
        compression_code("brotli")


def test_builder_reports_full_batch_and_first_record_always_fits() -> None:
    builder = new_builder(0, 1024)
    accepted = 0
    while builder.append(accepted, timestamp=None, key=None, value=b"x" * 100, headers=[]) is not None:
        accepted += 1
    assert 5 <= accepted <= 10
    big = new_builder(0, 1024)
    assert big.append(0, timestamp=None, key=None, value=b"x" * 5000, headers=[]) is not None
    assert estimate_record_size(None, b"x" * 5000, []) > 5000


def _three_batches() -> bytes:
    # offsets 0-2, 3-5, 6-8 as the broker would store them
    out = b""
    for n in range(3):
        raw = build_batch([(None, b"%d" % (n * 3 + i)) for i in range(3)], compression="lz4")
        out += assign(raw, base_offset=n * 3, leader_epoch=0)
    return out


def test_decode_skips_records_below_the_fetch_offset() -> None:
    data = _three_batches()
    decoded = decode_batches("t", 0, data, min_offset=4)
    assert [r.offset for r in decoded.records] == [4, 5, 6, 7, 8]
    assert [r.value for r in decoded.records] == [b"4", b"5", b"6", b"7", b"8"]
    assert decoded.next_offset == 9
    # a fetch offset past every batch yields nothing and does not move backwards
    assert decode_batches("t", 0, data, min_offset=9) == ([], 9)


def test_decode_ignores_a_partial_trailing_batch() -> None:
    data = _three_batches()
    decoded = decode_batches("t", 0, data[:-10], min_offset=0)
    assert [r.offset for r in decoded.records] == list(range(6))
    assert decoded.next_offset == 6


def test_decode_checks_crc_before_reading() -> None:
    data = bytearray(_three_batches())
    data[-1] ^= 0xFF  # inside the last batch's CRC'd range
    with pytest.raises(CorruptMessageError, match="CRC"):
        decode_batches("t", 0, bytes(data), min_offset=0)
    # a damaged batch wholly below the fetch offset is skipped without being decoded
    first_damaged = bytearray(_three_batches())
    first_damaged[70] ^= 0xFF
    with pytest.raises(CorruptMessageError):
        decode_batches("t", 0, bytes(first_damaged), min_offset=0)
    assert [r.offset for r in decode_batches("t", 0, bytes(first_damaged), min_offset=3).records] == [3, 4, 5, 6, 7, 8]


def test_record_types_are_frozen_values() -> None:
    rec = ConsumerRecord("t", 0, 5, 10, None, b"v", [])
    meta = RecordMetadata("t", 0, 5, 10)
    with pytest.raises(AttributeError):
        rec.offset = 6  # type: ignore[misc]
    with pytest.raises(AttributeError):
        meta.offset = 6  # type: ignore[misc]
    assert meta == RecordMetadata("t", 0, 5, 10)
    tp = TopicPartition("t", 1)
    assert tp == ("t", 1) and tp.topic == "t" and {tp: 1}[TopicPartition("t", 1)] == 1


def _recrc(raw: bytearray) -> bytes:
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    return bytes(raw)


@pytest.mark.parametrize("length", [0, 8, 48, -12, -100])
def test_decode_refuses_a_batch_shorter_than_its_header(length: int) -> None:
    """Found by tests/test_fuzz_decoders.py: a length of 0 or 8 handed aiokafka's compiled reader
    a buffer shorter than the 61-byte header it reads unchecked (a segmentation fault in the
    consumer); -12 made the walk stand still."""
    raw = bytearray(build_batch([(b"k", b"v")]))
    struct.pack_into(">i", raw, 8, length)
    with pytest.raises(CorruptMessageError, match=f"claims length {length}"):
        decode_batches("t", 0, bytes(raw), min_offset=0)


def test_records_that_do_not_decode_behind_a_good_crc_are_corrupt_message() -> None:
    """Found by tests/test_fuzz_decoders.py: the codec's own errors escaped (aiokafka's
    CorruptRecordException, UnicodeDecodeError, cramjam's DecompressionError), so the consumer's
    fetcher, which turns a KetchError into the partition's error, was bypassed."""
    too_many = bytearray(build_batch([(b"k", b"v")]))
    struct.pack_into(">i", too_many, 57, 2)  # records_count 2, one record present
    bad_header_key = bytearray(build_batch([(b"k", b"v")], headers=[("h", b"1")]))
    bad_header_key[bad_header_key.rindex(b"h")] = 0xFF  # the header key, last but two: not UTF-8
    bad_zstd = bytearray(build_batch([(b"k", b"v" * 50)], compression="zstd"))
    bad_zstd[70] ^= 0xFF
    for raw in (too_many, bad_header_key, bad_zstd):
        with pytest.raises(CorruptMessageError, match="do not decode"):
            decode_batches("t", 0, _recrc(raw), min_offset=0)


def test_decoded_records_have_every_field_in_its_place() -> None:
    """decode_batch builds records with ``tuple.__new__`` (positional): each field must land in its
    own place, as the named tuple built by keyword has it."""
    headers = [("h", b"x"), ("e", None)]
    builder = new_builder(0, 1 << 20)
    builder.append(0, timestamp=1_700_000_000_001, key=b"k0", value=b"v0", headers=headers)
    builder.append(1, timestamp=1_700_000_000_002, key=None, value=None, headers=[])
    whole = bytearray(builder.build())
    struct.pack_into(">q", whole, 0, 40)  # base offset 40
    struct.pack_into(">I", whole, 17, crc32c.crc32c(bytes(whole[21:])))
    records, next_offset = decode_batches("t", 3, bytes(whole))
    assert next_offset == 42
    assert records == [
        ConsumerRecord(
            topic="t", partition=3, offset=40, timestamp=1_700_000_000_001, key=b"k0", value=b"v0", headers=headers
        ),
        ConsumerRecord(
            topic="t", partition=3, offset=41, timestamp=1_700_000_000_002, key=None, value=None, headers=[]
        ),
    ]
    assert [type(r) for r in records] == [ConsumerRecord, ConsumerRecord]
    assert records[0]._replace(value=b"w").value == b"w" and records[0].value == b"v0"
