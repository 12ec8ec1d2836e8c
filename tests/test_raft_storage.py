"""RaftStorage over a real RocksDB, and the raft.proto codec it and the transport share.

Storage: persist/load round trip (including across a close and reopen), the
Ready contract's step 1 (a conflicting suffix is replaced, a snapshot drops the
whole log on both sides of it), compaction deleting the prefix, commit-only
writes that skip the fsync, and refusal to load a log with a gap. A Hypothesis
test runs random sequences of Readys and compactions through it and through
``MemoryStorage`` (the persist step is theirs in common, coordinator/raft/storage.py)
and requires both to load the same state after every write. Codec: every
message type round-trips, with and without entries and snapshots, and unknown
enum values are rejected rather than guessed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.raft import (
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    PersistedState,
    Ready,
    Snapshot,
    SoftState,
    Voter,
)
from coordinator.raft.storage import MemoryStorage
from coordinator.raft_codec import (
    batch_to_pb,
    entry_from_bytes,
    entry_to_bytes,
    hard_state_from_bytes,
    hard_state_to_bytes,
    message_from_pb,
    message_to_pb,
    snapshot_from_bytes,
    snapshot_to_bytes,
)
from coordinator.raft_storage import LOG_CF, CorruptRaftStorage, RaftStorage, index_key
from ketch.api.v1 import raft_pb2
from replication.rocks_store import NodeStore

VOTERS_123 = (Voter(1), Voter(2), Voter(3))


def entries(term: int, lo: int, hi: int) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, b"e%d" % i) for i in range(lo, hi + 1))


def ready(**kw: Any) -> Ready:
    return Ready(soft_state=SoftState(), **kw)


def stored_indexes(store: NodeStore) -> list[int]:
    it = store.cf[LOG_CF].iter()
    it.seek_to_first()
    out: list[int] = []
    while it.valid():
        out.append(int.from_bytes(it.key(), "big"))
        it.next()
    del it
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    s = NodeStore.open(str(tmp_path / "db"))
    yield s
    s.close()


# -- storage -------------------------------------------------------------------------------


def test_empty_store_loads_empty_state(store: NodeStore) -> None:
    assert RaftStorage(store).load() == PersistedState()


def test_persist_load_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with NodeStore.open(path) as s:
        rs = RaftStorage(s)
        noop = Entry(1, 1, b"", EntryKind.NOOP)
        assert rs.persist(ready(hard_state=HardState(1, 2, 0), entries=(noop,), must_sync=True))
        assert rs.persist(ready(hard_state=HardState(1, 2, 3), entries=entries(1, 2, 3), must_sync=True))
        assert rs.syncs == 2
    with NodeStore.open(path) as s:
        state = RaftStorage(s).load()
    assert state.hard_state == HardState(1, 2, 3)
    assert state.entries == (Entry(1, 1, b"", EntryKind.NOOP), *entries(1, 2, 3))
    assert state.snapshot.index == 0


def test_conflicting_suffix_is_replaced(store: NodeStore) -> None:
    rs = RaftStorage(store)
    rs.persist(ready(hard_state=HardState(1, 1, 2), entries=entries(1, 1, 6), must_sync=True))
    new = (Entry(2, 4, b"x4"), Entry(2, 5, b"x5"))
    rs.persist(ready(hard_state=HardState(2, 0, 2), entries=new, must_sync=True))
    assert rs.load().entries == (*entries(1, 1, 3), *new)  # old entry 6 is gone too
    assert stored_indexes(store) == [1, 2, 3, 4, 5]


def test_snapshot_drops_the_whole_log(store: NodeStore) -> None:
    rs = RaftStorage(store)
    rs.persist(ready(hard_state=HardState(1, 1, 3), entries=entries(1, 1, 8), must_sync=True))
    snap = Snapshot(index=5, term=2, voters=VOTERS_123, data=b"state@5")
    # entries below AND above the snapshot index go; entries after it in the same Ready stay
    rs.persist(ready(hard_state=HardState(2, 0, 5), snapshot=snap, entries=(Entry(2, 6, b"y6"),), must_sync=True))
    state = rs.load()
    assert state.snapshot == snap
    assert state.entries == (Entry(2, 6, b"y6"),)
    assert state.hard_state == HardState(2, 0, 5)
    assert stored_indexes(store) == [6]


def test_compaction_deletes_the_prefix(store: NodeStore) -> None:
    rs = RaftStorage(store)
    rs.persist(ready(hard_state=HardState(3, 1, 9), entries=entries(3, 1, 10), must_sync=True))
    snap = Snapshot(index=7, term=3, voters=(Voter(1),), data=b"s7")
    rs.compact(snap)
    assert stored_indexes(store) == [8, 9, 10]
    state = rs.load()
    assert state.snapshot == snap
    assert [e.index for e in state.entries] == [8, 9, 10]
    assert rs.snapshot() == snap


def test_commit_only_write_skips_fsync_and_empty_ready_writes_nothing(store: NodeStore) -> None:
    rs = RaftStorage(store)
    rs.persist(ready(hard_state=HardState(1, 1, 0), entries=entries(1, 1, 2), must_sync=True))
    assert rs.persist(ready(hard_state=HardState(1, 1, 2), must_sync=False))
    assert not rs.persist(ready(messages=(Message(MessageType.HEARTBEAT, 1, 2, 1),)))
    assert rs.syncs == 1
    assert rs.hard_state() == HardState(1, 1, 2)


def test_gap_in_stored_log_is_refused(store: NodeStore) -> None:
    rs = RaftStorage(store)
    rs.persist(ready(entries=entries(1, 1, 4), must_sync=True))
    wb = store.write_batch()
    wb.delete(index_key(2), store.handle[LOG_CF])
    store.write(wb, sync=True)
    with pytest.raises(CorruptRaftStorage, match="index 3 where 2"):
        rs.load()


def test_wipe_forgets_everything(store: NodeStore) -> None:
    rs = RaftStorage(store)
    rs.persist(ready(hard_state=HardState(4, 2, 1), entries=entries(4, 1, 3), must_sync=True))
    rs.compact(Snapshot(1, 4, (Voter(1), Voter(2)), b"s"))
    rs.wipe()
    assert rs.load() == PersistedState()


OPS = st.lists(
    st.tuples(st.sampled_from(("append", "snapshot", "compact", "hard")), st.integers(0, 6), st.integers(0, 3)),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, sync=st.booleans())
def test_rocksdb_and_memory_storage_persist_alike(tmp_path: Path, ops: list[tuple[str, int, int]], sync: bool) -> None:
    with NodeStore.open(tempfile.mkdtemp(dir=tmp_path)) as s:
        rocks, memory = RaftStorage(s), MemoryStorage()
        snap_index = last = 0
        for term, (op, a, b) in enumerate(ops, start=1):
            if op == "compact":
                if last == snap_index:
                    continue
                snap_index += 1 + a % (last - snap_index)
                snap = Snapshot(snap_index, term, VOTERS_123, b"c%d" % term)
                rocks.compact(snap)
                memory.compact(snap)
            else:
                rd = ready(hard_state=HardState(term, 2, snap_index), must_sync=sync)
                if op == "append":  # entries from anywhere in the stored log, or right after it
                    first = snap_index + 1 + a % (last - snap_index + 1)
                    rd = ready(entries=entries(term, first, first + b), must_sync=sync)
                    last = first + b
                elif op == "snapshot":  # a snapshot from the leader, maybe with entries after it
                    snap_index = snap_index + 1 + a
                    snap = Snapshot(snap_index, term, VOTERS_123, b"s%d" % term)
                    rd = ready(snapshot=snap, entries=entries(term, snap_index + 1, snap_index + b), must_sync=sync)
                    last = snap_index + b
                assert rocks.persist(rd) == memory.persist(rd)
            state = memory.load()
            assert rocks.load() == state
            assert [e.index for e in state.entries] == list(range(snap_index + 1, last + 1))
            assert rocks.syncs == memory.syncs


# -- codec ---------------------------------------------------------------------------------


SNAP = Snapshot(index=9, term=3, voters=VOTERS_123, data=b"\x00state\xff")


@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_message_type_round_trips(mtype: MessageType) -> None:
    m = Message(
        type=mtype,
        frm=1,
        to=3,
        term=7,
        log_term=6,
        index=41,
        entries=(Entry(7, 42, b"a"), Entry(7, 43, b"", EntryKind.NOOP)),
        commit=40,
        reject=True,
        reject_hint=12,
        snapshot=SNAP if mtype == MessageType.SNAP else None,
        context=b"ctx\x00",
    )
    pb = raft_pb2.RaftMessage.FromString(message_to_pb(m).SerializeToString())
    assert message_from_pb(pb) == m


def test_defaults_and_snapshot_presence_round_trip() -> None:
    bare = Message(MessageType.HEARTBEAT, 2, 1, 5)
    assert message_from_pb(message_to_pb(bare)) == bare
    assert message_from_pb(message_to_pb(bare)).snapshot is None
    empty_snap = Message(MessageType.SNAP, 2, 1, 5, snapshot=Snapshot())
    assert message_from_pb(message_to_pb(empty_snap)).snapshot == Snapshot()
    batch = raft_pb2.RaftBatch.FromString(batch_to_pb([bare, empty_snap]).SerializeToString())
    assert [message_from_pb(pb) for pb in batch.messages] == [bare, empty_snap]


def test_storage_values_round_trip() -> None:
    for e in (Entry(1, 1), Entry(2**40, 2**50, b"x" * 1000, EntryKind.NOOP)):
        assert entry_from_bytes(entry_to_bytes(e)) == e
    hs = HardState(term=9, vote=3, commit=2**33)
    assert hard_state_from_bytes(hard_state_to_bytes(hs)) == hs
    assert snapshot_from_bytes(snapshot_to_bytes(SNAP)) == SNAP


def test_unknown_enum_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="message type 0"):
        message_from_pb(raft_pb2.RaftMessage(frm=1, to=2))
    pb = raft_pb2.RaftMessage.FromString(b"\x08\x63")  # type = 99 (proto3 enums are open)
    with pytest.raises(ValueError, match="message type 99"):
        message_from_pb(pb)
    with pytest.raises(ValueError, match="entry kind 7"):
        entry_from_bytes(b"\x20\x07")


def test_bytes_that_are_not_the_message_are_value_error_and_refused_by_load(store: NodeStore) -> None:
    """Found by tests/test_fuzz_decoders.py: ``*_from_bytes`` let protobuf's DecodeError (not a
    ValueError) through, so a damaged stored entry escaped ``load`` untyped."""
    for decode in (entry_from_bytes, snapshot_from_bytes, hard_state_from_bytes):
        with pytest.raises(ValueError, match="bytes are not a Raft"):
            decode(b"\x00")
    rs = RaftStorage(store)
    rs.persist(ready(entries=entries(1, 1, 3), must_sync=True))
    wb = store.write_batch()
    wb.put(index_key(2), b"\x00", store.handle[LOG_CF])
    store.write(wb, sync=True)
    with pytest.raises(CorruptRaftStorage, match="not a RaftEntry"):
        rs.load()
