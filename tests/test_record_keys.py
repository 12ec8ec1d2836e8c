"""Keys in a compacted topic (replication/record_keys.py) and their place in ``Partition.append``.

The check alone: keyed records pass (an empty key is a key), the first keyless
record is named by batch and offset delta, compressed batches are decoded for
it, records that cannot be decoded are CORRUPT_MESSAGE; a Hypothesis test
compares it with a plain scan over any batches and codecs. Through
``Partition.append(require_keys=True)``: a refused request stores nothing
and leaves the producer state as it was.
"""

from __future__ import annotations

import struct

import crc32c
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from ketch.errors import ErrorCode, KetchError
from replication.memory_log import MemoryPartitionLog
from replication.partition import Partition
from replication.record_keys import check_keys, first_keyless
from tests.batches import make_batch, values

CODECS = (0, 1, 2, 3, 4)  # none, gzip, snappy, lz4, zstd
Key = bytes | None


def batch(keys: list[Key], codec: int = 0, producer_id: int = -1, sequence: int = -1) -> bytes:
    builder = DefaultRecordBatchBuilder(2, codec, 0, producer_id, 0 if producer_id >= 0 else -1, sequence, 1 << 20)
    for i, key in enumerate(keys):
        builder.append(i, timestamp=0, key=key, value=b"v%d" % i + b"." * 40, headers=[])
    return bytes(builder.build())


def refusal(batches: list[bytes]) -> KetchError:
    with pytest.raises(KetchError) as err:
        check_keys("t-0", batches)
    return err.value


def test_keyed_records_pass_and_an_empty_key_is_a_key() -> None:
    check_keys("t-0", [batch([b"a", b"b"]), batch([b""]), batch([b"k"] * 3, codec=4)])
    assert first_keyless(batch([b"a", b""])) is None


def test_a_keyless_record_is_invalid_record_naming_partition_and_offset_delta() -> None:
    err = refusal([batch([b"a", b"b", None, None])])
    assert err.code == ErrorCode.INVALID_RECORD
    assert err.message.startswith("t-0 is compacted (cleanup.policy has compact): every record needs a key")
    assert "offset delta 2 has none; nothing of this request was stored" in err.message
    err = refusal([batch([b"a"]), batch([None])])
    assert "offset delta 0 of batch 1 has none" in err.message


@pytest.mark.parametrize("codec", CODECS)
def test_a_compressed_batch_with_a_keyless_record_is_refused(codec: int) -> None:
    err = refusal([batch([b"a"] * 5 + [None] + [b"b"] * 5, codec=codec)])
    assert err.code == ErrorCode.INVALID_RECORD
    assert "offset delta 5" in err.message


def test_records_that_cannot_be_decoded_are_corrupt_message() -> None:
    data = bytearray(batch([b"a"] * 5, codec=4))
    data[70] ^= 0xFF  # inside the zstd frame; the CRC is made to match, as a client could
    data[17:21] = struct.pack(">I", crc32c.crc32c(bytes(data[21:])))
    err = refusal([bytes(data)])
    assert err.code == ErrorCode.CORRUPT_MESSAGE
    assert "t-0: the records of batch 0 cannot be decoded" in err.message


@given(
    st.lists(
        st.tuples(
            st.lists(st.one_of(st.none(), st.binary(max_size=4)), min_size=1, max_size=6),
            st.sampled_from(CODECS),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_check_keys_refuses_exactly_at_the_first_keyless_record(spec: list[tuple[list[Key], int]]) -> None:
    batches = [batch(keys, codec) for keys, codec in spec]
    first = next(((i, keys.index(None)) for i, (keys, _) in enumerate(spec) if None in keys), None)
    if first is None:
        check_keys("t-0", batches)
        return
    err = refusal(batches)
    where = f"offset delta {first[1]} of batch {first[0]} " if len(batches) > 1 else f"offset delta {first[1]} "
    assert err.code == ErrorCode.INVALID_RECORD and where + "has none" in err.message


def leader() -> Partition:
    part = Partition("t", 0, MemoryPartitionLog())
    part.become_leader(1, (1,), (1,), 1, 1, lag_time_max_ms=1000, now_ms=0)
    return part


def append(part: Partition, records: bytes, require_keys: bool = True) -> int:
    result = part.append(
        records, max_message_bytes=1 << 20, acks=1, min_insync_replicas=1, sync=False, require_keys=require_keys
    )
    return result.base_offset


def test_append_with_require_keys_refuses_the_whole_request_and_stores_nothing() -> None:
    part = leader()
    assert append(part, make_batch(0, 2, tag="k", keyed=True)) == 0
    with pytest.raises(KetchError) as err:
        append(part, make_batch(0, 1, tag="k2", keyed=True) + make_batch(0, 2))
    assert err.value.code == ErrorCode.INVALID_RECORD and "t-0 is compacted" in err.value.message
    assert "offset delta 0 of batch 1" in err.value.message
    assert part.log.log_end_offset == 2
    assert values(part.log.read(0, 1 << 20)) == [(0, b"k:0"), (1, b"k:1")]
    assert append(part, make_batch(0, 1), require_keys=False) == 2  # a delete-only topic takes any record


def test_a_refused_idempotent_batch_leaves_the_producer_state_as_it_was() -> None:
    part = leader()
    with pytest.raises(KetchError) as err:
        append(part, batch([b"a", None], producer_id=9, sequence=0))
    assert err.value.code == ErrorCode.INVALID_RECORD
    assert part.log.producer_state.get(9) is None
    assert append(part, batch([b"a", b"b"], producer_id=9, sequence=0)) == 0  # sequence 0 is still next
