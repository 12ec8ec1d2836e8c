"""Kafka RecordBatch v2 headers: the broker's view of a batch.

A broker reads the fixed 61-byte header, checks it, checks the CRC-32C, walks
the records once on produce (``check_records``: the count and offset deltas
the header promises, decompressed under a cap), and rewrites two fields in
place before storing the bytes as they are; it never decodes records on fetch:

    offset  size  field
         0     8  base_offset            assigned by the leader (outside the CRC)
         8     4  batch_length           bytes after this field
        12     4  partition_leader_epoch assigned by the leader (outside the CRC)
        16     1  magic                  must be 2
        17     4  crc                    CRC-32C of bytes 21..end
        21     2  attributes             compression in bits 0-2, bit 3 log-append-time,
                                         bit 4 transactional, bit 5 control
        23     4  last_offset_delta
        27     8  base_timestamp
        35     8  max_timestamp
        43     8  producer_id
        51     2  producer_epoch
        53     4  base_sequence
        57     4  records_count
        61     -  records (varints, possibly compressed)

Rules enforced by ``split_batches`` (each failure is a ``BatchError`` naming
the Kafka error code a client should see):
- the bytes must split exactly into whole batches (CORRUPT_MESSAGE otherwise);
- magic is 2 (UNSUPPORTED_VERSION otherwise);
- the CRC matches (CORRUPT_MESSAGE);
- records_count >= 1 and last_offset_delta == records_count - 1, the shape every
  producer batch has (INVALID_RECORD otherwise);
- the compression codec is one of none, gzip, snappy, lz4, zstd (INVALID_RECORD).

Because base offset and leader epoch sit before the CRC'd range, assigning them
never invalidates the checksum. Everything here is pure: bytes in, values out.

Transactions (KIP-98): a transactional batch has attribute bit 4 (``ATTR_TRANSACTIONAL``);
a control batch (a transaction marker) has bits 4 and 5 (``ATTR_CONTROL``), producer id and
epoch of the transaction it ends, base sequence -1, and exactly one uncompressed record whose
key is int16 version 0 + int16 type (0 abort, 1 commit) and whose value is int16 version 0 +
int32 coordinator epoch (Kafka's ``EndTransactionMarker``). Only the transaction coordinator
writes markers (``build_marker_batch``); ``marker_is_commit`` reads the type back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c
from aiokafka.record.default_records import DefaultRecordBatch

from ketch import decompression
from ketch.errors import ErrorCode

HEADER_SIZE = 61
LENGTH_PREFIX = 12  # base_offset + batch_length: bytes not counted in batch_length
MAGIC = 2
COMPRESSION_MASK = 0x07
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
MARKER_ABORT = 0
MARKER_COMMIT = 1
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_LENGTH_AT_8 = struct.Struct(">i")


class BatchError(ValueError):
    """A batch the broker refuses; ``code`` is the error the client receives."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch takes, header included."""
        return self.batch_length + LENGTH_PREFIX

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def compression(self) -> str:
        return CODECS.get(self.attributes & COMPRESSION_MASK, "unknown")


def parse_header(batch: bytes | bytearray | memoryview, at: int = 0) -> BatchHeader:
    """Read the header of the batch starting at ``at``; the only checks are that the header is
    whole and that its ``batch_length`` covers the header (CORRUPT_MESSAGE otherwise).

    The length check is what keeps every walk over back-to-back batches (``iter_headers``, a
    follower's ``plan_append``, a coordinator's load, the log cleaner) moving forward: a length
    below 49 would give a ``size`` of zero or less, and the walk would spin or step backwards."""
    if len(batch) - at < HEADER_SIZE:
        raise BatchError(
            ErrorCode.CORRUPT_MESSAGE,
            f"record batch truncated: {len(batch) - at} bytes, a header needs {HEADER_SIZE}",
        )
    header = BatchHeader(*_HEADER.unpack_from(batch, at))
    if header.batch_length < HEADER_SIZE - LENGTH_PREFIX:
        raise BatchError(
            ErrorCode.CORRUPT_MESSAGE,
            f"record batch at byte {at} claims length {header.batch_length}, "
            f"less than the {HEADER_SIZE - LENGTH_PREFIX} bytes of its own header",
        )
    return header


def _check(batch: memoryview, header: BatchHeader) -> None:
    if header.magic != MAGIC:
        raise BatchError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"record batch magic {header.magic} is not supported; only RecordBatch v2 (magic 2)",
        )
    actual = crc32c.crc32c(batch[21:])
    if actual != header.crc:
        raise BatchError(
            ErrorCode.CORRUPT_MESSAGE,
            f"record batch CRC-32C mismatch: header says {header.crc:#010x}, bytes give {actual:#010x}",
        )
    if header.records_count < 1 or header.last_offset_delta != header.records_count - 1:
        raise BatchError(
            ErrorCode.INVALID_RECORD,
            f"record batch has {header.records_count} records but last offset delta "
            f"{header.last_offset_delta}; a producer batch holds at least one record "
            "with consecutive offsets",
        )
    if header.attributes & COMPRESSION_MASK not in CODECS:
        raise BatchError(
            ErrorCode.INVALID_RECORD,
            f"record batch uses unknown compression codec {header.attributes & COMPRESSION_MASK}",
        )


def split_batches(records: bytes | bytearray | memoryview) -> list[tuple[BatchHeader, memoryview]]:
    """Split and validate back-to-back batches; all or nothing.

    Returns ``(header, view)`` pairs whose views cover ``records`` exactly.
    Raises ``BatchError`` for the first bad batch, so a request with one bad
    batch stores none of them.
    """
    view = memoryview(records)
    if len(view) == 0:
        raise BatchError(ErrorCode.CORRUPT_MESSAGE, "produce request holds no record batch")
    out: list[tuple[BatchHeader, memoryview]] = []
    at = 0
    while at < len(view):
        header = parse_header(view, at)
        end = at + header.size
        if end > len(view):
            raise BatchError(
                ErrorCode.CORRUPT_MESSAGE,
                f"record batch at byte {at} claims length {header.batch_length}, "
                f"but {len(view) - at - LENGTH_PREFIX} bytes follow",
            )
        one = view[at:end]
        _check(one, header)
        out.append((header, one))
        at = end
    return out


def assign(batch: memoryview | bytes, base_offset: int, leader_epoch: int) -> bytes:
    """Copy of ``batch`` with base offset and leader epoch set (CRC untouched)."""
    out = bytearray(batch)
    _BASE_OFFSET.pack_into(out, 0, base_offset)
    _LEADER_EPOCH.pack_into(out, 12, leader_epoch)
    return bytes(out)


def iter_headers(records: bytes | memoryview) -> list[BatchHeader]:
    """Headers of stored (already validated) back-to-back batches."""
    out = []
    at = 0
    while at + LENGTH_PREFIX <= len(records):
        header = parse_header(records, at)
        out.append(header)
        at += header.size
    return out


def batches_below(data: bytes, limit: int) -> bytes:
    """The prefix of whole stored batches whose last offset is below ``limit``."""
    keep = 0
    for header in iter_headers(data):
        if header.last_offset >= limit:
            break
        keep += header.size
    return data[:keep]


# -- transaction markers (control batches) ------------------------------------

_MARKER_KEY = struct.Struct(">hh")  # version, type
_MARKER_VALUE = struct.Struct(">hi")  # version, coordinator epoch


def _varint(n: int) -> bytes:
    """A zigzag varint, as in Kafka's record encoding."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    z = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise BatchError(ErrorCode.CORRUPT_MESSAGE, "control record: truncated varint")
        b = data[at]
        at += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1), at
        shift += 7


def build_marker_batch(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timestamp_ms: int
) -> bytes:
    """A RecordBatch v2 control batch holding one ``EndTransactionMarker`` record (base offset 0:
    the leader assigns it), CRC-32C set."""
    key = _MARKER_KEY.pack(0, MARKER_COMMIT if commit else MARKER_ABORT)
    value = _MARKER_VALUE.pack(0, coordinator_epoch)
    body = (
        b"\x00"  # record attributes
        + _varint(0)  # timestamp delta
        + _varint(0)  # offset delta
        + _varint(len(key))
        + key
        + _varint(len(value))
        + value
        + _varint(0)  # no headers
    )
    record = _varint(len(body)) + body
    length = HEADER_SIZE - LENGTH_PREFIX + len(record)
    out = bytearray(
        _HEADER.pack(
            0,
            length,
            -1,
            MAGIC,
            0,
            ATTR_TRANSACTIONAL | ATTR_CONTROL,
            0,
            timestamp_ms,
            timestamp_ms,
            producer_id,
            producer_epoch,
            -1,
            1,
        )
    )
    out += record
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def marker_is_commit(batch: bytes | memoryview) -> bool:
    """Whether the control batch ``batch`` is a COMMIT marker (else ABORT); ``BatchError`` when it
    is not a control batch holding one well-formed ``EndTransactionMarker`` record."""
    header = parse_header(batch)
    if not header.is_control or header.compression != "none" or header.records_count != 1:
        raise BatchError(
            ErrorCode.INVALID_RECORD,
            "a transaction marker is one uncompressed control record in a control batch "
            f"(attributes {header.attributes:#x}, {header.records_count} records)",
        )
    view = memoryview(batch)[: header.size]
    _, at = _read_varint(view, HEADER_SIZE)  # record length
    at += 1  # record attributes
    _, at = _read_varint(view, at)  # timestamp delta
    _, at = _read_varint(view, at)  # offset delta
    key_len, at = _read_varint(view, at)
    if key_len < _MARKER_KEY.size or at + key_len > len(view):
        raise BatchError(ErrorCode.INVALID_RECORD, f"control record key of {key_len} bytes is too short")
    version, kind = _MARKER_KEY.unpack_from(view, at)
    if version != 0 or kind not in (MARKER_ABORT, MARKER_COMMIT):
        raise BatchError(
            ErrorCode.INVALID_RECORD, f"control record version {version} type {kind} is not a transaction marker"
        )
    return kind == MARKER_COMMIT


# -- records inside a batch (Kafka's LogValidator) ----------------------------


def check_records(header: BatchHeader, batch: memoryview | bytes, max_decompressed_bytes: int) -> None:
    """Refuse a batch whose records do not match its header; ``batch`` is one whole batch.

    Rules (each a ``BatchError``):
    - the body decompresses (``ketch.decompression``) to at most ``max_decompressed_bytes``
      (INVALID_RECORD beyond it, CORRUPT_MESSAGE when the codec refuses the bytes);
    - it holds exactly ``records_count`` records, back to back, each as long as its length
      varint says, with nothing after the last (CORRUPT_MESSAGE otherwise): a header that claims
      2^31 records while holding one would move the log end offset by 2^31;
    - record ``i`` has offset delta ``i`` (INVALID_RECORD otherwise), so the offsets a consumer
      reads are the offsets the leader assigned.
    The header checks of ``split_batches`` (last_offset_delta == records_count - 1) come first.
    Only the length, attributes, timestamp delta and offset delta of each record are read: a
    varint walk, no key, value or header is copied.
    """
    codec = header.attributes & COMPRESSION_MASK
    if codec == 0:
        whole = bytes(batch[: header.size])
    else:
        try:
            body = decompression.decompress(codec, memoryview(batch)[HEADER_SIZE : header.size], max_decompressed_bytes)
        except decompression.DecompressedTooLarge as exc:
            raise BatchError(
                ErrorCode.INVALID_RECORD,
                f"{exc}, the cap of one batch (max_decompressed_batch_bytes={exc.limit})",
            ) from None
        except decompression.CorruptBody as exc:
            raise BatchError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
        whole = uncompressed_copy(batch, body)
    problem = walk_records(whole)
    if problem is not None:
        code, message = problem
        raise BatchError(code, f"record batch with {header.records_count} records ({header.compression}): {message}")


def uncompressed_copy(batch: memoryview | bytes, body: bytes) -> bytes:
    """``batch``'s header (codec bits cleared, length set; CRC left stale) followed by ``body``."""
    head = bytearray(batch[:HEADER_SIZE])
    _LENGTH_AT_8.pack_into(head, 8, HEADER_SIZE - LENGTH_PREFIX + len(body))
    attributes = struct.unpack_from(">h", head, 21)[0] & ~COMPRESSION_MASK
    struct.pack_into(">h", head, 21, attributes)
    return bytes(head) + body


def walk_records(whole: bytes) -> tuple[ErrorCode, str] | None:
    """The first problem of the records of one whole uncompressed batch (see ``check_records``).

    aiokafka's compiled reader does the walk (a third of the time of a Python varint loop:
    0.35 against 1 us a record); it reads exactly ``records_count`` records, each bounded by its
    length, and fails on bytes left over; the offset deltas are checked here."""
    try:
        decoded = DefaultRecordBatch(whole)
        base = decoded.base_offset
        for index, record in enumerate(decoded):
            if record.offset - base != index:
                return (
                    ErrorCode.INVALID_RECORD,
                    f"record {index} has offset delta {record.offset - base}; deltas must be 0..n-1 in order",
                )
    except Exception as exc:  # aiokafka's CorruptRecordException, UnicodeDecodeError in a header key
        return ErrorCode.CORRUPT_MESSAGE, f"the records do not decode ({exc})"
    return None
