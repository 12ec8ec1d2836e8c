"""Transactional offset commits (coordinator/groups/txn_offsets.py): pending until the marker, fenced like
OffsetCommit (KIP-447), UNSTABLE_OFFSET_COMMIT for require_stable, and replay of the log = live state.

The log here is what the driver appends: plain batches of offset records, transactional batches of one
producer (``TransactionalRecord``), and markers (``TransactionMarker``) — only the markers the partition's
marker rule writes (a duplicate or stale one writes nothing, and the driver then does not call
``complete_transaction``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.groups import (
    CommittedOffset,
    GroupCoordinator,
    GroupResult,
    LogEntry,
    OffsetCommit,
    TransactionalRecord,
    TransactionMarker,
    decode_record,
    encode_record,
)
from ketch.assignors import TopicPartition
from ketch.errors import ErrorCode
from tests.test_groups_support import FAST, Driver

TP0, TP1 = TopicPartition("in", 0), TopicPartition("in", 1)
WALL = 1_700_000_000_000


class TxnDriver(Driver):
    """``Driver`` with a log that keeps batch kinds, as the node's ``decode_chunk`` does."""

    def __init__(self) -> None:
        super().__init__(FAST)
        self.entries: list[LogEntry] = []

    def take(self, result: GroupResult[Any], request_id: int | None = None) -> Any:
        # Every record goes through the codec, as in the real log.
        for record in result.records:
            decoded = decode_record(*encode_record(record))
            if result.transactional is not None:
                self.entries.append(TransactionalRecord(result.transactional[0], decoded))
            else:
                self.entries.append(decoded)
        return super().take(result, request_id)

    def txn_commit(
        self,
        group: str,
        pid: int,
        epoch: int,
        offsets: dict[TopicPartition, int],
        member: str = "",
        generation: int = -1,
    ) -> dict[TopicPartition, int]:
        result = self.coordinator.txn_offset_commit(
            group,
            member,
            generation,
            pid,
            epoch,
            {tp: OffsetCommit(o) for tp, o in offsets.items()},
            now_ms=self.now,
            timestamp_ms=WALL + self.now,
        )
        assert result.transactional == ((pid, epoch) if result.records else None)
        response = self.take(result)
        assert response is not None
        return dict(response.errors)

    def marker(self, pid: int, commit: bool) -> tuple[str, ...]:
        """A marker the partition WROTE: in the log, then ``complete_transaction``."""
        self.entries.append(TransactionMarker(pid, commit))
        result = self.coordinator.complete_transaction(pid, commit)
        assert result.records == ()
        assert result.response is not None
        return result.response

    def replayed(self) -> GroupCoordinator:
        return GroupCoordinator.load(self.entries, now_ms=self.now, config=self.config)


def test_txn_offsets_are_pending_until_the_commit_marker() -> None:
    d = TxnDriver()
    assert d.commit("g", "", -1, {TP0: 5}) == {TP0: 0}
    assert d.txn_commit("g", 7, 0, {TP0: 10, TP1: 3}) == {TP0: 0, TP1: 0}
    assert d.committed("g") == {TP0: 5}  # OffsetFetch never returns pending offsets
    assert d.marker(7, commit=True) == ("g",)
    assert d.committed("g") == {TP0: 10, TP1: 3}
    assert d.coordinator.groups["g"].pending_txn_offsets == {}


def test_abort_marker_drops_pending_offsets_and_a_blank_group_is_forgotten() -> None:
    d = TxnDriver()
    d.txn_commit("g", 7, 0, {TP0: 10})
    assert "g" in d.coordinator.groups  # pending offsets keep the group
    assert d.marker(7, commit=False) == ("g",)
    assert d.committed("g") == {}
    assert "g" not in d.coordinator.groups
    assert "g" not in d.replayed().groups


def test_a_marker_ends_only_its_own_producers_offsets_in_every_group() -> None:
    d = TxnDriver()
    d.txn_commit("g", 7, 0, {TP0: 10})
    d.txn_commit("h", 7, 0, {TP0: 20})
    d.txn_commit("g", 8, 3, {TP1: 30})
    assert sorted(d.marker(7, commit=True)) == ["g", "h"]
    assert d.committed("g") == {TP0: 10}
    assert d.committed("h") == {TP0: 20}
    assert d.marker(7, commit=True) == ()  # nothing pending for 7 any more
    assert d.marker(8, commit=True) == ("g",)
    assert d.committed("g") == {TP0: 10, TP1: 30}


def test_require_stable_answers_unstable_offset_commit_for_pending_partitions() -> None:
    d = TxnDriver()
    d.commit("g", "", -1, {TP0: 5, TP1: 6})
    d.txn_commit("g", 7, 0, {TP0: 10})
    fetched = d.coordinator.fetch_offsets("g", [TP0, TP1], require_stable=True)
    assert fetched.error == ErrorCode.UNSTABLE_OFFSET_COMMIT
    assert fetched.errors == {TP0: ErrorCode.UNSTABLE_OFFSET_COMMIT}
    assert fetched.offsets[TP0].offset == -1 and fetched.offsets[TP1].offset == 6
    every = d.coordinator.fetch_offsets("g", None, require_stable=True)
    assert every.error == ErrorCode.UNSTABLE_OFFSET_COMMIT and every.errors == {TP0: ErrorCode.UNSTABLE_OFFSET_COMMIT}
    listing = d.coordinator.fetch_offsets("g", None)  # the admin's view: committed offsets as they are
    assert listing.error == ErrorCode.NONE and {tp: c.offset for tp, c in listing.offsets.items()} == {TP0: 5, TP1: 6}
    plain = d.coordinator.fetch_offsets("g", [TP0, TP1])
    assert plain.error == ErrorCode.NONE and plain.errors == {} and plain.offsets[TP0].offset == 5
    d.marker(7, commit=False)
    after = d.coordinator.fetch_offsets("g", [TP0], require_stable=True)
    assert after.error == ErrorCode.NONE and after.offsets[TP0].offset == 5


def test_member_and_generation_are_fenced_like_offset_commit() -> None:
    d = TxnDriver()
    (leader, generation), (follower, _) = d.stable_group("g", 2)
    assert d.txn_commit("g", 7, 0, {TP0: 1}, leader, generation) == {TP0: 0}
    assert d.txn_commit("g", 7, 0, {TP0: 2}, follower, generation - 1) == {TP0: ErrorCode.ILLEGAL_GENERATION}
    assert d.txn_commit("g", 7, 0, {TP0: 2}, "zombie", generation) == {TP0: ErrorCode.UNKNOWN_MEMBER_ID}
    assert d.txn_commit("g", 7, 0, {TP0: 2}) == {TP0: ErrorCode.UNKNOWN_MEMBER_ID}  # simple only while Empty
    assert d.txn_commit("other", 7, 0, {TP0: 2}, "m", 3) == {TP0: ErrorCode.UNKNOWN_MEMBER_ID}
    assert d.txn_commit("", 7, 0, {TP0: 2}) == {TP0: ErrorCode.INVALID_GROUP_ID}
    assert d.txn_commit("g", -1, 0, {TP0: 2}, leader, generation) == {TP0: ErrorCode.INVALID_REQUEST}
    assert d.txn_commit("g", 7, 0, {TP0: -5}, leader, generation) == {TP0: ErrorCode.INVALID_REQUEST}
    assert d.coordinator.groups["g"].pending_txn_offsets == {7: {TP0: CommittedOffset(1, -1, "", WALL + d.now)}}


def test_a_group_with_pending_offsets_cannot_be_deleted() -> None:
    d = TxnDriver()
    d.txn_commit("g", 7, 0, {TP0: 10})
    assert d.delete("g") == ErrorCode.NON_EMPTY_GROUP
    d.marker(7, commit=True)
    assert d.delete("g") == ErrorCode.NONE


def test_replay_keeps_pending_offsets_across_group_metadata_records() -> None:
    d = TxnDriver()
    d.txn_commit("g", 7, 0, {TP0: 10})
    d.stable_group("g", 1)  # a group metadata record after the transactional batch
    replayed = d.replayed()
    assert replayed.groups["g"].pending_txn_offsets == d.coordinator.groups["g"].pending_txn_offsets
    d.marker(7, commit=True)
    assert d.replayed().groups["g"].offsets == d.coordinator.groups["g"].offsets


def test_replay_refuses_a_transactional_record_that_is_not_an_offset() -> None:
    d = TxnDriver()
    d.stable_group("g", 1)
    group_record = next(e for e in d.entries if not isinstance(e, TransactionalRecord | TransactionMarker))
    try:
        GroupCoordinator.load([TransactionalRecord(7, group_record)], now_ms=0)
    except ValueError as exc:
        assert "producer 7" in str(exc)
    else:
        raise AssertionError("a transactional group metadata record was accepted")


# -- Hypothesis: random interleavings, then replay == live and a model of what is visible ----------------

GROUPS = ("g1", "g2")
PIDS = (1, 2, 3)
PARTS = (TP0, TP1)
steps = st.one_of(
    st.tuples(st.just("commit"), st.sampled_from(GROUPS), st.sampled_from(PARTS), st.integers(0, 99)),
    st.tuples(
        st.just("txn"), st.sampled_from(GROUPS), st.sampled_from(PIDS), st.sampled_from(PARTS), st.integers(0, 99)
    ),
    # force: the partition writes it although the producer has no open transaction there (the marker
    # rule's "unknown producer or older epoch" case): it ends nothing.
    st.tuples(st.just("marker"), st.sampled_from(PIDS), st.booleans(), st.sampled_from([False, False, True])),
    st.tuples(st.just("reset"), st.sampled_from(GROUPS), st.sampled_from(PARTS), st.none() | st.integers(0, 99)),
    st.tuples(st.just("delete"), st.sampled_from(GROUPS)),
    st.tuples(st.just("join"), st.sampled_from(GROUPS)),
)


class Model:
    """What each group's committed and pending offsets must be, from the rules alone."""

    def __init__(self) -> None:
        self.committed: dict[str, dict[TopicPartition, int]] = {g: {} for g in GROUPS}
        self.pending: dict[int, dict[str, dict[TopicPartition, int]]] = {}
        self.open: dict[int, bool] = {}  # the producer's transaction is open on this offsets partition
        self.epoch: dict[int, int] = dict.fromkeys(PIDS, 0)
        self.members: dict[str, tuple[str, int] | None] = dict.fromkeys(GROUPS)


def run(d: TxnDriver, m: Model, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "commit":
        _, g, tp, offset = step
        member = m.members[g]
        member_id, generation = member if member is not None else ("", -1)
        if d.commit(g, member_id, generation, {tp: offset}) == {tp: 0}:
            m.committed[g][tp] = offset
    elif kind == "txn":
        _, g, pid, tp, offset = step
        member = m.members[g]
        member_id, generation = member if member is not None else ("", -1)
        if d.txn_commit(g, pid, m.epoch[pid], {tp: offset}, member_id, generation) == {tp: 0}:
            m.pending.setdefault(pid, {}).setdefault(g, {})[tp] = offset
            m.open[pid] = True
    elif kind == "marker":
        _, pid, commit, force = step
        if not m.open.get(pid):
            if force:
                m.epoch[pid] += 1
                assert d.marker(pid, commit) == ()
            return  # else the partition's marker rule: a duplicate or stale marker writes nothing
        m.open[pid] = False
        m.epoch[pid] += 1
        ended = set(d.marker(pid, commit))
        mine = m.pending.pop(pid, {})
        assert ended == set(mine)
        if commit:
            for g, offsets in mine.items():
                m.committed[g].update(offsets)
    elif kind == "reset":
        _, g, tp, offset = step
        if d.reset(g, {tp: offset}) == ErrorCode.NONE:
            if offset is None:
                m.committed[g].pop(tp, None)
            else:
                m.committed[g][tp] = offset
    elif kind == "delete":
        _, g = step
        if d.delete(g) == ErrorCode.NONE:
            assert not any(g in p for p in m.pending.values())
            m.committed[g] = {}
    elif kind == "join":
        _, g = step
        member = m.members[g]
        if member is None:
            (m.members[g],) = d.stable_group(g, 1)
        else:  # the member leaves: the group is Empty again
            left = d.take(d.coordinator.leave_group(g, member[0], now_ms=d.now))
            assert left is not None and left.error == 0
            m.members[g] = None


def check(d: TxnDriver, m: Model) -> None:
    live = d.coordinator
    for g in GROUPS:
        assert d.committed(g) == m.committed[g]
        pending_tps = {tp for by_group in m.pending.values() for tp in by_group.get(g, {})}
        fetched = live.fetch_offsets(g, PARTS, require_stable=True)
        assert set(fetched.errors) == pending_tps
        group = live.groups.get(g)
        live_pending = (
            {pid: {tp: c.offset for tp, c in p.items()} for pid, p in group.pending_txn_offsets.items()}
            if group
            else {}
        )
        assert live_pending == {pid: p[g] for pid, p in m.pending.items() if g in p}
    replayed = d.replayed()
    assert set(replayed.groups) <= set(live.groups)
    for g, group in live.groups.items():
        restored = replayed.groups.get(g)
        assert restored is not None or (not group.offsets and not group.pending_txn_offsets)
        if restored is not None:
            assert restored.offsets == group.offsets
            assert restored.pending_txn_offsets == group.pending_txn_offsets


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=40))
def test_random_interleavings_replay_to_the_live_state(history: list[tuple[Any, ...]]) -> None:
    d, m = TxnDriver(), Model()
    for step in history:
        run(d, m, step)
        check(d, m)
