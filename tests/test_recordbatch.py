"""Broker-side RecordBatch v2 checks: every malformed batch is refused with its code."""

from __future__ import annotations

import struct

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from ketch import recordbatch
from ketch.errors import ErrorCode


def build(n: int = 3, compression: int = 0, ts: int = 1_700_000_000_000) -> bytes:
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 1 << 20)
    for i in range(n):
        builder.append(i, timestamp=ts + i, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[])
    return bytes(builder.build())


@pytest.mark.parametrize("compression", [0, 1, 2, 3, 4])
def test_valid_batches_split_and_keep_their_bytes(compression: int) -> None:
    a, b = build(3, compression), build(5, compression)
    parts = recordbatch.split_batches(a + b)
    assert [h.records_count for h, _ in parts] == [3, 5]
    assert [bytes(v) for _, v in parts] == [a, b]
    assert parts[0][0].compression == recordbatch.CODECS[compression]
    assert parts[1][0].max_timestamp == 1_700_000_000_004


def test_assign_sets_offset_and_epoch_without_breaking_crc() -> None:
    raw = build(4)
    stored = recordbatch.assign(raw, 1000, 7)
    header = recordbatch.parse_header(stored)
    assert (header.base_offset, header.leader_epoch, header.next_offset) == (1000, 7, 1004)
    recordbatch.split_batches(stored)  # CRC still valid
    decoded = DefaultRecordBatch(stored)
    assert decoded.validate_crc()
    assert [r.offset for r in decoded] == [1000, 1001, 1002, 1003]


def test_crc_mismatch_is_corrupt_message() -> None:
    raw = bytearray(build(2))
    raw[-1] ^= 0xFF
    with pytest.raises(recordbatch.BatchError) as err:
        recordbatch.split_batches(bytes(raw))
    assert err.value.code == ErrorCode.CORRUPT_MESSAGE
    assert "CRC" in str(err.value)


def test_one_bad_batch_refuses_the_whole_request() -> None:
    bad = bytearray(build(2))
    bad[70] ^= 0x01
    with pytest.raises(recordbatch.BatchError):
        recordbatch.split_batches(build(1) + bytes(bad))


@pytest.mark.parametrize("cut", [0, 10, 60, 61, 70])
def test_truncated_bytes_are_corrupt_message(cut: int) -> None:
    raw = build(3)
    with pytest.raises(recordbatch.BatchError) as err:
        recordbatch.split_batches(raw[:cut] if cut else b"")
    assert err.value.code == ErrorCode.CORRUPT_MESSAGE


def test_trailing_garbage_is_corrupt_message() -> None:
    with pytest.raises(recordbatch.BatchError) as err:
        recordbatch.split_batches(build(1) + b"\x00" * 5)
    assert err.value.code == ErrorCode.CORRUPT_MESSAGE


def test_other_magic_is_unsupported_version() -> None:
    raw = bytearray(build(1))
    raw[16] = 1
    with pytest.raises(recordbatch.BatchError) as err:
        recordbatch.split_batches(bytes(raw))
    assert err.value.code == ErrorCode.UNSUPPORTED_VERSION


def _recrc(raw: bytearray) -> bytes:
    import crc32c

    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    return bytes(raw)


def test_count_and_delta_must_agree() -> None:
    raw = bytearray(build(3))
    struct.pack_into(">i", raw, 57, 4)  # records_count 4, last_offset_delta 2
    with pytest.raises(recordbatch.BatchError) as err:
        recordbatch.split_batches(_recrc(raw))
    assert err.value.code == ErrorCode.INVALID_RECORD


def test_unknown_codec_is_invalid_record() -> None:
    raw = bytearray(build(1))
    struct.pack_into(">h", raw, 21, 6)
    with pytest.raises(recordbatch.BatchError) as err:
        recordbatch.split_batches(_recrc(raw))
    assert err.value.code == ErrorCode.INVALID_RECORD


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_validator(data: bytes) -> None:
    try:
        parts = recordbatch.split_batches(data)
    except recordbatch.BatchError as exc:
        assert exc.code in ErrorCode
    else:
        assert sum(h.size for h, _ in parts) == len(data)


@given(st.integers(0, 200), st.integers(0, 2000))
def test_any_single_byte_flip_in_the_crc_range_is_caught(position: int, seed: int) -> None:
    raw = bytearray(build(3))
    at = 21 + position % (len(raw) - 21)
    raw[at] ^= 1 + seed % 255
    with pytest.raises(recordbatch.BatchError):
        recordbatch.split_batches(bytes(raw))


@pytest.mark.parametrize("length", [48, 0, -12, -13, -(2**31)])
def test_a_length_shorter_than_the_header_is_corrupt_message_in_every_walk(length: int) -> None:
    """Found by tests/test_fuzz_decoders.py: ``iter_headers`` (a follower's ``plan_append``, the
    log cleaner, a coordinator's load) advanced by ``header.size``, which a length of -12 makes 0
    (the walk spun forever) and a lower one negative (it stepped backwards)."""
    raw = bytearray(build(1))
    struct.pack_into(">i", raw, 8, length)
    for walk in (recordbatch.parse_header, recordbatch.iter_headers, recordbatch.split_batches):
        with pytest.raises(recordbatch.BatchError) as err:
            walk(bytes(raw))
        assert err.value.code == ErrorCode.CORRUPT_MESSAGE
        assert f"claims length {length}" in str(err.value)


# -- check_records: the records must be what the header says (Kafka's LogValidator) ----------


def _check(raw: bytes, limit: int = 1 << 26) -> None:
    for header, view in recordbatch.split_batches(raw):
        recordbatch.check_records(header, view, limit)


@pytest.mark.parametrize("compression", [0, 1, 2, 3, 4])
def test_honest_batches_pass_the_record_check(compression: int) -> None:
    _check(build(1, compression) + build(50, compression))


@pytest.mark.parametrize("compression", [0, 1, 3, 4])
@pytest.mark.parametrize("claimed", [2, 2**31 - 1])
def test_a_count_the_records_do_not_match_is_corrupt_message(compression: int, claimed: int) -> None:
    raw = bytearray(build(1, compression))
    struct.pack_into(">i", raw, 57, claimed)  # the header agrees with itself, the records do not
    struct.pack_into(">i", raw, 23, claimed - 1)
    with pytest.raises(recordbatch.BatchError) as err:
        _check(_recrc(raw))
    assert err.value.code == ErrorCode.CORRUPT_MESSAGE
    assert f"{claimed} records" in str(err.value)


def test_more_records_than_the_count_is_corrupt_message() -> None:
    raw = bytearray(build(3))
    struct.pack_into(">i", raw, 57, 2)
    struct.pack_into(">i", raw, 23, 1)
    with pytest.raises(recordbatch.BatchError) as err:
        _check(_recrc(raw))
    assert err.value.code == ErrorCode.CORRUPT_MESSAGE
    assert "unconsumed" in str(err.value)


def test_offset_deltas_out_of_order_are_invalid_record() -> None:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for delta in (0, 2, 2):  # the header (count 3, last delta 2) agrees with itself
        builder.append(delta, timestamp=1, key=None, value=b"v", headers=[])
    with pytest.raises(recordbatch.BatchError) as err:
        _check(bytes(builder.build()))
    assert err.value.code == ErrorCode.INVALID_RECORD
    assert "record 1 has offset delta 2" in str(err.value)


@pytest.mark.parametrize("compression", [1, 2, 3, 4])
def test_a_batch_inflating_past_the_cap_is_invalid_record(compression: int) -> None:
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 1 << 30)
    builder.append(0, timestamp=1, key=None, value=bytes(4 << 20), headers=[])
    raw = bytes(builder.build())
    _check(raw, 5 << 20)
    with pytest.raises(recordbatch.BatchError) as err:
        _check(raw, 1 << 20)
    assert err.value.code == ErrorCode.INVALID_RECORD
    assert "max_decompressed_batch_bytes=1048576" in str(err.value)


@given(st.binary(max_size=300), st.sampled_from([0, 1, 2, 3, 4]))
def test_arbitrary_records_behind_a_good_crc_never_crash_the_record_check(body: bytes, codec: int) -> None:
    raw = bytearray(build(1))[: recordbatch.HEADER_SIZE] + body
    struct.pack_into(">i", raw, 8, len(raw) - recordbatch.LENGTH_PREFIX)
    struct.pack_into(">h", raw, 21, codec)
    try:
        _check(_recrc(raw), 1 << 16)
    except recordbatch.BatchError as exc:
        assert exc.code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD)
