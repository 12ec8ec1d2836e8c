"""Hostile input: every decoder that reads bytes from the network or disk, fuzzed (issue 17, item 5).

Each decoder gets (a) arbitrary bytes and (b) valid encodings with mutations (tests/fuzzing.py:
bit flips, truncation, extreme 32-bit length/count fields, inserted and appended junk; for record
batches the CRC-32C is recomputed so the mutation reaches past the CRC check). A decoder must
return a value or raise its documented typed error, and return within the hang guard.

    decoder (where the bytes come from)                    accepts / raises on bad input
    ketch.recordbatch.split_batches (Produce, network)     whole valid v2 batches / BatchError (code)
    ketch.recordbatch.iter_headers (follower fetch, disk)  stored batches / BatchError
    replication.follower.plan_append (leader's answer)     back-to-back batches / BatchError
    ketch.recordbatch.marker_is_commit (stored marker)     one control record / BatchError
    replication.record_keys.check_keys (compacted Produce) CRC-valid batches / KetchError
                                                           CORRUPT_MESSAGE or INVALID_RECORD
    ketch.records.decode_batches (consumer Fetch)          batches / CorruptMessageError
    ketch.assignors.protocol.decode_subscription,          consumer JSON / ValueError
        decode_assignment (JoinGroup/SyncGroup bytes)
    coordinator.groups.records.decode_record               offsets-log JSON / ValueError
        (__consumer_offsets, disk)
    coordinator.transactions.records.decode_record         txn-log JSON / ValueError
        (__transaction_state, disk)
    node.group_coordinator GroupManager.decode_chunk       offsets-log batches / BatchError,
        (a coordinator's load from its log)                CorruptMessageError, ValueError
    coordinator.metadata.records.decode_batch,             protobuf / ValueError (replay:
        snapshot.decode_snapshot (Raft entries, snapshots) MetadataReplayError, a ValueError)
    coordinator.raft_codec *_from_bytes (Raft storage)     protobuf / ValueError
    coordinator.raft_codec message_from_pb (Raft RPC)      RaftMessage / ValueError (DecodeError
                                                           is gRPC's parse, before our code)
    replication stored values: EpochCache, CleanerCheckpoint, ProducerEntry, ProducerStateTable,
        AbortedTxn .decode, and a RocksPartitionLog opened over a corrupt state field / ValueError

Budget: ``KETCH_FUZZ_EXAMPLES`` per test (default 300), x50 with ``KETCH_SLOW=1``; the inputs tried
per decoder print at the end of the module (run with ``-s``) and go to ``KETCH_FUZZ_REPORT``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import crc32c
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from coordinator.groups.records import (
    CommittedOffset,
    GroupMetadataKey,
    GroupMetadataValue,
    GroupRecord,
    MemberMetadata,
    OffsetCommitKey,
)
from coordinator.groups.records import decode_record as decode_group_record
from coordinator.groups.records import encode_record as encode_group_record
from coordinator.metadata import records as mrec
from coordinator.metadata.delta import replay_batch
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.snapshot import decode_snapshot, encode_snapshot
from coordinator.raft import Entry, EntryKind, HardState, Message, MessageType, Snapshot, Voter
from coordinator.raft_codec import (
    entry_from_bytes,
    entry_to_bytes,
    hard_state_from_bytes,
    hard_state_to_bytes,
    message_from_pb,
    message_to_pb,
    snapshot_from_bytes,
    snapshot_to_bytes,
)
from coordinator.transactions.records import decode_record as decode_txn_record
from coordinator.transactions.records import encode_record as encode_txn_record
from coordinator.transactions.state import TransactionMetadata, TxnState
from ketch.api.v1 import raft_pb2
from ketch.assignors.base import MemberSubscription, TopicPartition
from ketch.assignors.protocol import decode_assignment, decode_subscription, encode_assignment, encode_subscription
from ketch.errors import CorruptMessageError, KetchError
from ketch.recordbatch import BatchError, build_marker_batch, iter_headers, marker_is_commit, split_batches
from ketch.records import build_batch, decode_batches
from node.group_coordinator import GroupManager
from replication.compaction import CleanerCheckpoint
from replication.epoch_cache import EpochCache
from replication.follower import plan_append
from replication.producer_state import BatchMetadata, ProducerEntry, ProducerStateTable
from replication.record_keys import check_keys
from replication.rocks_store import NodeStore
from replication.transactions import AbortedTxn
from tests.batches import keyed_batch, make_batch
from tests.fuzzing import FUZZ, TRIED, attempt, mutate, write_report


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> Iterator[None]:
    yield
    write_report(__name__)


def seeded(*seeds: bytes) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or one of ``seeds`` (valid encodings) mutated."""

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        return mutate(draw(st.sampled_from(seeds)), draw)

    return st.one_of(st.binary(max_size=300), mutated())


# -- RecordBatch v2 --------------------------------------------------------------------------

_BATCHES = [
    make_batch(0, 3),
    make_batch(7, 1, producer_id=5, producer_epoch=1, base_sequence=0),
    make_batch(0, 2, producer_id=9, producer_epoch=0, base_sequence=0, transactional=True),
    build_batch([(b"k", b"v"), (None, b"x" * 40)], compression="gzip"),
    build_batch([(b"k", b"v" * 30)], compression="zstd", headers=[("h", b"1")]),
    build_batch([(b"a", b"b")], compression="lz4"),
    build_batch([(b"a", None)], compression="snappy"),
    keyed_batch(0, [(b"a", b"1"), (b"b", None)]),
    build_marker_batch(5, 1, True, 3, 1000),
]
_FIELDS = {"length": 8, "epoch": 12, "magic": 16, "attributes": 21, "last_delta": 23, "count": 57, "sequence": 53}


@st.composite
def batch_bytes(draw: st.DrawFn, crc_valid: bool = False) -> bytes:
    """Back-to-back batches, each maybe mutated (header fields set to extremes, record bytes
    changed) with its CRC-32C recomputed so the mutation gets past the CRC check; ``crc_valid``:
    always recomputed, and no mutation across batches afterwards."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        b = bytearray(draw(st.sampled_from(_BATCHES)))
        if draw(st.booleans()):
            for _ in range(draw(st.integers(1, 3))):
                name = draw(st.sampled_from(sorted(_FIELDS)))
                at = _FIELDS[name]
                if name in ("magic",):
                    b[at] = draw(st.integers(0, 255))
                elif name == "attributes":
                    struct.pack_into(">h", b, at, draw(st.integers(-(2**15), 2**15 - 1)))
                else:
                    value = draw(st.sampled_from([-(2**31), -13, -12, -1, 0, 1, 48, 49, 2**31 - 1]))
                    struct.pack_into(">i", b, at, value)
        if draw(st.booleans()):
            b = bytearray(b[:61] + mutate(bytes(b[61:]), draw))
            if draw(st.booleans()):
                struct.pack_into(">i", b, 8, len(b) - 12)
        if len(b) >= 21 and (crc_valid or draw(st.booleans())):
            struct.pack_into(">I", b, 17, crc32c.crc32c(bytes(b[21:])))
        out += bytes(b)
    if not crc_valid and draw(st.booleans()):
        out = mutate(out, draw)
    return out


RECORD_BYTES = st.one_of(st.binary(max_size=300), batch_bytes())


@FUZZ
@given(RECORD_BYTES)
def test_split_batches_accepts_or_raises_batch_error(data: bytes) -> None:
    batches = attempt("recordbatch.split_batches", split_batches, (BatchError,), data)
    if batches is not None:  # what it accepts covers the input exactly, in whole CRC-checked batches
        assert b"".join(bytes(view) for _, view in batches) == data
        for header, view in batches:
            assert header.size == len(view) and header.records_count >= 1


@FUZZ
@given(RECORD_BYTES)
def test_stored_batch_walks_end_or_raise_batch_error(data: bytes) -> None:
    attempt("recordbatch.iter_headers", iter_headers, (BatchError,), data)
    attempt("follower.plan_append", plan_append, (BatchError,), data, 0)
    attempt("recordbatch.marker_is_commit", marker_is_commit, (BatchError,), data)


@FUZZ
@given(batch_bytes(crc_valid=True))
def test_compacted_produce_key_check_is_typed(data: bytes) -> None:
    """The broker decodes records only for a compacted topic, after the header and CRC checks."""
    batches = attempt("recordbatch.split_batches (before check_keys)", split_batches, (BatchError,), data)
    if batches is None:
        return
    TRIED["record_keys.check_keys"] += 1
    try:
        check_keys("t-0", [view for _, view in batches])
    except KetchError as exc:
        assert exc.code.name in ("CORRUPT_MESSAGE", "INVALID_RECORD"), exc


@FUZZ
@given(RECORD_BYTES, st.integers(-1, 10), st.lists(st.tuples(st.integers(-1, 10), st.integers(-1, 10)), max_size=3))
def test_consumer_decode_batches_raises_only_corrupt_message(
    data: bytes, min_offset: int, aborted: list[tuple[int, int]]
) -> None:
    decoded = attempt("records.decode_batches", decode_batches, (CorruptMessageError,), "t", 0, data, min_offset)
    if decoded is not None:
        assert decoded.next_offset >= min_offset
    attempt(
        "records.decode_batches (read_committed)",
        decode_batches,
        (CorruptMessageError,),
        "t",
        0,
        data,
        min_offset,
        aborted,
    )


# -- JSON records: consumer protocol, offsets log, transaction log ---------------------------

_HOSTILE_JSON: list[Any] = [
    None,
    True,
    -1,
    2**63,
    1.5e308,
    "",
    "\udcff",
    [],
    {},
    [[["deep"]]],
    {"v": 0},
    ["t", 2**40],
]


def json_seeded(*seeds: bytes) -> st.SearchStrategy[bytes]:
    """``seeded`` plus structural mutations: a field of a valid record set to a hostile JSON value,
    documents nested deeper than the parser's recursion limit, and invalid UTF-8."""

    @st.composite
    def structural(draw: st.DrawFn) -> bytes:
        obj = json.loads(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from([*sorted(obj), "extra"]))
            obj[key] = draw(st.sampled_from(_HOSTILE_JSON))
        return json.dumps(obj).encode("utf-8", "surrogatepass")

    deep = st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)
    deep_field = st.sampled_from(seeds).map(lambda s: s[:-1] + b',"x":' + b"[" * 100_000 + b"}")
    big_int = st.integers(4_000, 10_000).map(lambda n: b'{"v":' + b"9" * n + b"}")
    return st.one_of(seeded(*seeds), structural(), deep, deep_field, big_int)


_SUBSCRIPTIONS = [
    encode_subscription(MemberSubscription(frozenset({"a", "b"}), (TopicPartition("a", 0),), 3), b"ud"),
    encode_subscription(MemberSubscription(frozenset()), b""),
]
_ASSIGNMENTS = [encode_assignment([TopicPartition("a", 1), TopicPartition("b", 0)], b"\x00\xff"), encode_assignment([])]


@FUZZ
@given(json_seeded(*_SUBSCRIPTIONS, *_ASSIGNMENTS))
def test_consumer_protocol_bytes_raise_only_value_error(data: bytes) -> None:
    attempt("assignors.protocol.decode_subscription", decode_subscription, (ValueError,), data)
    attempt("assignors.protocol.decode_assignment", decode_assignment, (ValueError,), data)


_MEMBER = MemberMetadata("m-1", "c", "/127.0.0.1", 10_000, 30_000, _SUBSCRIPTIONS[0], _ASSIGNMENTS[0])
_GROUP_RECORDS = [
    encode_group_record(GroupRecord(OffsetCommitKey("g", "t", 0), CommittedOffset(42, 3, "meta", 1000))),
    encode_group_record(GroupRecord(OffsetCommitKey("g", "t", 1), None)),
    encode_group_record(
        GroupRecord(GroupMetadataKey("g"), GroupMetadataValue("consumer", 2, "range", "m-1", (_MEMBER,)))
    ),
    encode_group_record(GroupRecord(GroupMetadataKey("g"), None)),
]
_GROUP_BYTES = [part for pair in _GROUP_RECORDS for part in pair if part is not None]


@FUZZ
@given(json_seeded(*_GROUP_BYTES), st.one_of(st.none(), json_seeded(*_GROUP_BYTES)))
def test_offsets_log_records_raise_only_value_error(key: bytes, value: bytes | None) -> None:
    attempt("groups.records.decode_record", decode_group_record, (ValueError,), key, value)


_TXN_META = TransactionMetadata(
    "tx",
    7,
    2,
    60_000,
    TxnState.PREPARE_COMMIT,
    frozenset({TopicPartition("t", 0)}),
    frozenset({"g"}),
    1,
    2,
    "client",
)
_TXN_RECORDS = [encode_txn_record(_TXN_META), encode_txn_record(TransactionMetadata("tx", 7, 0, 1000, TxnState.EMPTY))]
_TXN_BYTES = [part for pair in _TXN_RECORDS for part in pair]


@FUZZ
@given(json_seeded(*_TXN_BYTES), st.one_of(st.none(), json_seeded(*_TXN_BYTES)))
def test_transaction_log_records_raise_only_value_error(key: bytes, value: bytes | None) -> None:
    attempt("transactions.records.decode_record", decode_txn_record, (ValueError,), key, value)


_OFFSETS_LOG = [
    keyed_batch(0, [_GROUP_RECORDS[0], _GROUP_RECORDS[2]]),
    keyed_batch(2, [(_GROUP_RECORDS[1][0], None)], producer_id=4, producer_epoch=0, base_sequence=0),
    build_marker_batch(4, 0, False, 1, 5),
]


@st.composite
def offsets_log_bytes(draw: st.DrawFn) -> bytes:
    data = b"".join(draw(st.lists(st.sampled_from(_OFFSETS_LOG), min_size=1, max_size=3)))
    return mutate(data, draw) if draw(st.booleans()) else data


@FUZZ
@given(st.one_of(st.binary(max_size=300), offsets_log_bytes(), batch_bytes()), st.integers(0, 3))
def test_group_coordinator_load_raises_only_typed_errors(data: bytes, offset: int) -> None:
    """A coordinator's load (node/internal_topic.py ``_load``) decodes its partition's stored log."""
    manager = SimpleNamespace(topic="__consumer_offsets")
    decode = GroupManager.decode_chunk
    attempt("group_coordinator.decode_chunk (load)", decode, (ValueError, KetchError), manager, 0, data, offset)


# -- protobuf: metadata records and snapshots, Raft -----------------------------------------


def _image() -> MetadataImage:
    image = MetadataImage()
    image = replay_batch(image, 1, [mrec.register_broker(1, "inc", "h", 9092), mrec.broker_fence(1, 1, False)])
    image = replay_batch(
        image,
        2,
        [mrec.topic("t", "tid", {"retention.ms": "1"}), mrec.partition("tid", 0, [1], [1], 1)],
    )
    image = replay_batch(image, 3, [mrec.producer_ids(1, 1, 1000), mrec.config(mrec.BROKER_RESOURCE, "", "x", "y")])
    return image


_METADATA = [
    mrec.encode_batch([mrec.register_broker(1, "inc", "h", 9092, "r", 4), mrec.no_op(1)]),
    mrec.encode_batch([mrec.topic("t", "tid", {"a": "b"}), mrec.partition("tid", 0, [1, 2], [1], 1, 2, 3)]),
    mrec.encode_batch([mrec.partition_change("tid", 0, 2, [2], True, replicas=[2], adding=[2], removing=[1])]),
    encode_snapshot(_image()),
]


@FUZZ
@given(seeded(*_METADATA))
def test_metadata_batches_and_snapshots_raise_only_value_error(data: bytes) -> None:
    attempt("metadata.records.decode_batch", mrec.decode_batch, (ValueError,), data)
    attempt("metadata.snapshot.decode_snapshot", decode_snapshot, (ValueError,), data)


_VOTERS = (Voter(1, "d1", "h:1"), Voter(2, "d2", "h:2"))
_ENTRIES = [
    entry_to_bytes(Entry(3, 10, b"payload", EntryKind.NORMAL)),
    entry_to_bytes(Entry(3, 11, b"", EntryKind.CONF, _VOTERS)),
]
_SNAPSHOTS = [snapshot_to_bytes(Snapshot(10, 3, _VOTERS, _METADATA[3])), snapshot_to_bytes(Snapshot(1, 1, (), b""))]
_HARD = [hard_state_to_bytes(HardState(4, 2, 9))]
_MESSAGES = [
    message_to_pb(
        Message(MessageType.APP, 1, 2, 3, 2, 9, (Entry(3, 10, b"x"),), 9, context=b"c", directory="d")
    ).SerializeToString(),
    message_to_pb(Message(MessageType.SNAP, 1, 2, 3, snapshot=Snapshot(10, 3, _VOTERS, b"s"))).SerializeToString(),
]


@FUZZ
@given(seeded(*_ENTRIES, *_SNAPSHOTS, *_HARD, *_MESSAGES))
def test_raft_storage_and_messages_raise_only_value_error(data: bytes) -> None:
    attempt("raft_codec.entry_from_bytes", entry_from_bytes, (ValueError,), data)
    attempt("raft_codec.snapshot_from_bytes", snapshot_from_bytes, (ValueError,), data)
    attempt("raft_codec.hard_state_from_bytes", hard_state_from_bytes, (ValueError,), data)

    def from_wire(raw: bytes) -> Message:
        return message_from_pb(raft_pb2.RaftMessage.FromString(raw))

    attempt("raft_codec.message_from_pb", from_wire, (DecodeError, ValueError), data)


# -- replication: stored values -------------------------------------------------------------

_ENTRY = ProducerEntry(5, 1, (BatchMetadata(0, 2, 10, 12, 99), BatchMetadata(3, 3, 13, 13, 100)), 100, 10)
_STORED: dict[str, tuple[Callable[[bytes], Any], list[bytes]]] = {
    "EpochCache.decode": (EpochCache.decode, [EpochCache([(0, 0), (3, 10)]).encode()]),
    "CleanerCheckpoint.decode": (CleanerCheckpoint.decode, [CleanerCheckpoint(10, ((5, 1), (10, 2))).encode()]),
    "ProducerEntry.decode": (ProducerEntry.decode, [_ENTRY.encode()]),
    "ProducerStateTable.decode": (ProducerStateTable.decode, [ProducerStateTable({5: _ENTRY}).encode()]),
    "AbortedTxn.decode": (lambda raw: AbortedTxn.decode(20, raw), [AbortedTxn(20, 5, 10).encode()]),
}


@pytest.mark.parametrize("name", sorted(_STORED))
@FUZZ
@given(data=st.data())
def test_replication_stored_values_raise_only_value_error(name: str, data: st.DataObject) -> None:
    decode, seeds = _STORED[name]
    raw = data.draw(seeded(*seeds))
    attempt(f"replication.{name}", decode, (ValueError,), raw)


_STATE_FIELDS = [b"start", b"end", b"size", b"maxts", b"floor", b"epochs", b"hw", b"cleaner"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeStore]:
    with NodeStore.open(str(tmp_path_factory.mktemp("fuzz-store"))) as s:
        yield s


@FUZZ
@given(st.data())
def test_partition_log_over_corrupt_stored_state_raises_value_error(store: NodeStore, data: st.DataObject) -> None:
    """A node opening a partition log whose stored state field (or producer entry, or aborted
    transaction) is damaged gets a ValueError naming it, not a struct.error from deep inside."""
    pid = 1 + data.draw(st.integers(0, 1 << 20))
    prefix = struct.pack(">I", pid)
    where = data.draw(st.sampled_from(["state", "producers", "txnindex"]))
    raw = data.draw(st.binary(max_size=40))
    if where == "state":
        key = prefix + data.draw(st.sampled_from(_STATE_FIELDS))
    elif where == "producers":
        key = prefix + data.draw(st.sampled_from([b"e", b"s"])) + data.draw(st.binary(max_size=12))
    else:
        key = prefix + data.draw(st.binary(max_size=12))
    store.cf[where][key] = raw
    try:
        log = attempt("rocks_log.RocksPartitionLog (open)", store.partition_log, (ValueError,), pid)
        if log is not None:
            store.forget(log)
    finally:
        store.drop_partition(pid)
