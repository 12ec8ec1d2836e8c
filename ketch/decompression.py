"""Bounded decompression of a RecordBatch v2 body: never more than ``limit`` bytes out.

A batch's records may be compressed (attributes bits 0-2: 1 gzip, 2 snappy, 3 lz4, 4 zstd). A
few hundred KiB of gzip or zstd can inflate to gigabytes, so every decompression of bytes that
came from the network (the leader's record check on produce, the compacted-topic key check,
the consumer) goes through ``decompress`` with a cap, and refuses a body whose output would
pass it with ``DecompressedTooLarge``, without ever holding more than the cap:

- gzip: the stdlib's ``zlib.decompressobj`` with ``max_length``: at most ``limit + 1`` bytes are
  produced, in chunks (several gzip members are read one after another, as ``GzipFile`` does);
- snappy: a raw snappy block starts with its uncompressed length (a varint), read with
  ``cramjam.snappy.decompress_raw_len`` before decompressing; the xerial framing Kafka's Java
  client writes (a 16-byte header, then 4-byte length + raw block, repeated) is walked block by
  block, adding the announced lengths;
- lz4 (frame format) and zstd: cramjam's ``decompress_into`` streams into a buffer it is given
  and fails with "failed to write whole buffer" once it is full (measured: a 300 MB zstd bomb
  into a 1 MiB buffer peaks at 16 MB of RSS). The buffer starts at 8x the compressed size (at
  least 64 KiB) and doubles, up to ``limit + 1``, decompressing again each time: at most twice
  the work of the final size, and a legitimate batch usually fits the first buffer.

Bytes a codec cannot decompress raise ``CorruptBody`` with the codec's message; the caller
turns both errors into its own (CORRUPT_MESSAGE on the broker, ``CorruptMessageError`` in the
consumer). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib

import cramjam

GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
MAX_DECOMPRESSED_BATCH_BYTES = 64 * 1024 * 1024
"""The default cap of one batch's decompressed records (the node's max_decompressed_batch_bytes,
the consumer's parameter of the same name): the node's default max_request_bytes, so a batch
that fits in a request uncompressed always passes."""
_XERIAL_HEADER = b"\x82SNAPPY\x00"
_XERIAL_PREFIX = 16
_BLOCK_LENGTH = struct.Struct(">i")
_GZIP_CHUNK = 1 << 20
_FIRST_BUFFER = 64 * 1024
_BUFFER_FULL = "failed to write whole buffer"


class DecompressedTooLarge(ValueError):
    """The body inflates past the cap; ``limit`` is the cap in bytes."""

    def __init__(self, codec: str, limit: int) -> None:
        super().__init__(f"{codec} records decompress to more than {limit} bytes")
        self.limit = limit


class CorruptBody(ValueError):
    """The codec refused the compressed bytes."""


def decompress(codec: int, data: bytes | memoryview, limit: int) -> bytes:
    """The decompressed body, at most ``limit`` bytes; ``codec`` is the batch's compression (1-4)."""
    try:
        if codec == GZIP:
            return _gzip(data, limit)
        if codec == SNAPPY:
            return _snappy(data, limit)
        if codec == LZ4:
            return _streamed("lz4", cramjam.lz4.decompress_into, data, limit)
        if codec == ZSTD:
            return _streamed("zstd", cramjam.zstd.decompress_into, data, limit)
    except (zlib.error, cramjam.DecompressionError, struct.error) as exc:
        raise CorruptBody(f"{_NAMES.get(codec, codec)} records cannot be decompressed: {exc}") from None
    raise CorruptBody(f"unknown compression codec {codec}")


_NAMES = {GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}


def _gzip(data: bytes | memoryview, limit: int) -> bytes:
    out = bytearray()
    rest = bytes(data)
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        while pending and not inflater.eof:
            out += inflater.decompress(pending, min(_GZIP_CHUNK, limit + 1 - len(out)))
            if len(out) > limit:
                raise DecompressedTooLarge("gzip", limit)
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise CorruptBody("gzip records cannot be decompressed: truncated stream")
        rest = inflater.unused_data
    return bytes(out)


def _snappy(data: bytes | memoryview, limit: int) -> bytes:
    view = memoryview(data)
    if len(view) < _XERIAL_PREFIX or bytes(view[:8]) != _XERIAL_HEADER:
        blocks = [view]
    else:
        blocks = []
        at = _XERIAL_PREFIX
        while at < len(view):
            (size,) = _BLOCK_LENGTH.unpack_from(view, at)
            if size < 0 or at + 4 + size > len(view):
                raise CorruptBody(f"snappy records cannot be decompressed: a block of {size} bytes is truncated")
            blocks.append(view[at + 4 : at + 4 + size])
            at += 4 + size
    total = 0
    for block in blocks:
        total += int(cramjam.snappy.decompress_raw_len(block))
        if total > limit:
            raise DecompressedTooLarge("snappy", limit)
    return b"".join(bytes(cramjam.snappy.decompress_raw(block)) for block in blocks)


def _streamed(name: str, decompress_into: object, data: bytes | memoryview, limit: int) -> bytes:
    size = min(max(_FIRST_BUFFER, 8 * len(data)), limit + 1)
    while True:
        buffer = bytearray(size)
        try:
            written = decompress_into(data, buffer)  # type: ignore[operator]
        except cramjam.DecompressionError as exc:
            if _BUFFER_FULL not in str(exc):
                raise
            if size > limit:
                raise DecompressedTooLarge(name, limit) from None
            size = min(size * 2, limit + 1)
            continue
        if written > limit:
            raise DecompressedTooLarge(name, limit)
        del buffer[written:]
        return bytes(buffer)
