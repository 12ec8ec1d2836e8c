"""Bounded decompression (ketch/decompression.py): same bytes as the codecs under the cap, a typed
refusal above it, without holding the inflated output."""

from __future__ import annotations

import resource

import pytest
from aiokafka import codec as kafka_codec
from hypothesis import given, settings
from hypothesis import strategies as st

from ketch import decompression

ENCODERS = {
    decompression.GZIP: kafka_codec.gzip_encode,
    decompression.SNAPPY: kafka_codec.snappy_encode,  # xerial framing, as Kafka's Java client
    decompression.LZ4: kafka_codec.lz4_encode,
    decompression.ZSTD: kafka_codec.zstd_encode,
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(ENCODERS)), st.binary(max_size=200_000), st.integers(1, 300_000))
def test_under_the_cap_the_output_is_the_input_and_above_it_a_refusal(codec: int, raw: bytes, limit: int) -> None:
    packed = ENCODERS[codec](raw)
    if len(raw) <= limit:
        assert decompression.decompress(codec, packed, limit) == raw
    else:
        with pytest.raises(decompression.DecompressedTooLarge):
            decompression.decompress(codec, packed, limit)


def test_raw_snappy_is_read_too() -> None:
    packed = kafka_codec.snappy_encode(b"abc" * 1000, xerial_compatible=False)
    assert decompression.decompress(decompression.SNAPPY, packed, 3000) == b"abc" * 1000
    with pytest.raises(decompression.DecompressedTooLarge):
        decompression.decompress(decompression.SNAPPY, packed, 2999)


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_a_bomb_is_refused_without_inflating_it(codec: int) -> None:
    bomb = ENCODERS[codec](bytes(256 << 20))  # 256 MiB of zeros: 0.26 MB of gzip, 10 KB of zstd
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(decompression.DecompressedTooLarge) as err:
        decompression.decompress(codec, bomb, 1 << 20)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 << 10, f"peak RSS grew by {grown_kib} KiB"
    assert "more than 1048576 bytes" in str(err.value)


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_bytes_the_codec_refuses_are_corrupt(codec: int) -> None:
    packed = bytearray(ENCODERS[codec](b"hello " * 100))
    packed[len(packed) // 2 :] = b"\xff" * (len(packed) - len(packed) // 2)
    with pytest.raises((decompression.CorruptBody, decompression.DecompressedTooLarge)):
        decompression.decompress(codec, bytes(packed), 1 << 20)


def test_the_consumer_refuses_a_bomb_by_its_cap() -> None:
    from ketch.errors import CorruptMessageError
    from ketch.records import build_batch, decode_batches

    batch = build_batch([(None, bytes(8 << 20))], compression="gzip")
    assert decode_batches("t", 0, batch, max_decompressed_bytes=9 << 20).records[0].value == bytes(8 << 20)
    with pytest.raises(CorruptMessageError, match="more than 1048576 bytes"):
        decode_batches("t", 0, batch, max_decompressed_bytes=1 << 20)
