"""The partition side of transactions (rules 3, 4, 5 and 10 of the protocol; the rules are in
replication/transactions.py and replication/producer_state.py), over MemoryPartitionLogs.

``test_marker_rule_and_lso_against_a_replay`` drives one leader with a Hypothesis sequence of
transactional data (verified by a model coordinator, KIP-890), commit and abort markers with
the coordinator's bumped epoch, duplicate and stale markers, late data of an old epoch,
non-transactional data and truncation (then a new leader epoch over the same log), and checks
every answer, the last stable offset, read_committed reads and the aborted transactions
against a plain replay of the stored batches.
"""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from hypothesis import given, settings
from hypothesis import strategies as st

from ketch.errors import ErrorCode, KetchError
from ketch.recordbatch import BatchError, build_marker_batch, iter_headers, marker_is_commit, parse_header
from replication.follower import FetchAnswer
from replication.memory_log import MemoryPartitionLog
from replication.partition import AppendResult, Partition
from replication.producer_state import ProducerEntry, ProducerStateTable
from replication.transactions import SkipMarker, WriteMarker, marker_verdict
from tests.batches import make_batch

PID = 7


def txn(epoch: int, seq: int = 0, count: int = 2, pid: int = PID, tag: str = "t") -> bytes:
    return make_batch(0, count, tag=tag, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True)


def leader(log: MemoryPartitionLog | None = None, epoch: int = 1) -> Partition:
    part = Partition("t", 0, log or MemoryPartitionLog())
    part.become_leader(1, (1,), (1,), epoch, epoch, lag_time_max_ms=1000, now_ms=0)
    return part


def append(part: Partition, records: bytes, verified: bool = False) -> AppendResult:
    return part.append(
        records, max_message_bytes=1 << 20, acks=-1, min_insync_replicas=1, sync=False, transaction_verified=verified
    )


def marker(part: Partition, epoch: int, commit: bool, pid: int = PID) -> AppendResult | None:
    return part.write_marker(pid, epoch, commit, 3, min_insync_replicas=1, timestamp_ms=5, sync=False)


# -- the control batch ------------------------------------------------------------------------


def test_a_marker_is_a_valid_control_batch_that_kafka_reads() -> None:
    raw = build_marker_batch(42, 9, True, 3, 1234)
    header = parse_header(raw)
    assert (header.is_control, header.is_transactional, header.producer_id, header.producer_epoch) == (
        True,
        True,
        42,
        9,
    )
    assert (header.base_sequence, header.records_count, header.base_offset) == (-1, 1, 0)
    decoded = DefaultRecordBatch(raw)
    assert decoded.validate_crc() and decoded.is_control_batch
    (record,) = list(decoded)
    assert record.key == b"\x00\x00\x00\x01" and record.value == b"\x00\x00\x00\x00\x00\x03"
    assert marker_is_commit(raw) and not marker_is_commit(build_marker_batch(42, 9, False, 3, 0))


def test_a_malformed_control_record_is_a_batch_error() -> None:
    with pytest.raises(BatchError):
        marker_is_commit(make_batch(0, 1))  # not a control batch
    raw = bytearray(build_marker_batch(1, 1, True, 0, 0))
    raw[-9] = 7  # the marker type: neither abort nor commit
    with pytest.raises(BatchError):
        marker_is_commit(bytes(raw))


def test_a_client_may_not_produce_a_control_batch() -> None:
    part = leader()
    with pytest.raises(KetchError) as info:
        append(part, build_marker_batch(PID, 0, True, 0, 0), verified=True)
    assert info.value.code == ErrorCode.INVALID_RECORD
    assert part.log.log_end_offset == 0


# -- KIP-890 verification and the marker rule ---------------------------------------------------


def test_a_transaction_starts_only_after_verification_and_continues_without() -> None:
    part = leader()
    assert part.transaction_to_verify(txn(0)) == (PID, 0)
    with pytest.raises(KetchError) as info:
        append(part, txn(0))
    assert info.value.code == ErrorCode.INVALID_TXN_STATE and "coordinator must verify" in info.value.message
    assert append(part, txn(0), verified=True).base_offset == 0
    assert part.transaction_to_verify(txn(0, seq=2)) is None  # continues the open transaction
    assert append(part, txn(0, seq=2)).base_offset == 2
    assert part.transaction_to_verify(make_batch(0, 1)) is None
    assert part.transaction_to_verify(b"junk") is None


def test_a_commit_marker_ends_the_transaction_and_a_duplicate_writes_nothing() -> None:
    part = leader()
    append(part, make_batch(0, 1))
    append(part, txn(0), verified=True)  # offsets 1-2
    assert part.last_stable_offset == 1
    assert part.read(0, 1 << 20, read_committed=True).records == part.read(0, 1 << 20).records[: len(make_batch(0, 1))]
    written = marker(part, 1, True)
    assert written is not None and (written.base_offset, written.last_offset) == (3, 3)
    assert part.last_stable_offset == 4 == part.high_watermark
    assert marker(part, 1, True) is None and marker(part, 0, False) is None  # duplicate, stale
    assert part.log.log_end_offset == 4 and part.log.aborted_index() == []
    with pytest.raises(KetchError) as info:  # late data of the ended transaction's epoch
        append(part, txn(0, seq=2), verified=True)
    assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH


def test_a_delayed_marker_never_ends_the_next_transaction() -> None:
    part = leader()
    append(part, txn(0), verified=True)
    assert marker(part, 1, False) is not None  # abort (pid, 0): the epoch is now 1
    append(part, txn(1), verified=True)  # transaction (pid, 1) from offset 3
    assert marker(part, 1, False) is None  # a retry of the first abort marker
    assert part.last_stable_offset == 3
    assert [(t.producer_id, t.first_offset, t.last_offset) for t in part.log.aborted_index()] == [(PID, 0, 2)]
    read = part.read(0, 1 << 20, read_committed=True)
    assert [h.base_offset for h in iter_headers(read.records)] == [0, 2]
    assert read.aborted == ((PID, 0),) and read.last_stable_offset == 3


def test_an_abort_between_verification_and_append_refuses_the_append() -> None:
    part = leader()
    append(part, txn(0), verified=True)
    marker(part, 1, True)
    assert part.transaction_to_verify(txn(1)) == (PID, 1)
    marker(part, 2, False)  # a fencing abort of (pid, 1) lands first
    with pytest.raises(KetchError) as info:
        append(part, txn(1), verified=True)
    assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH


def test_a_marker_for_an_unknown_producer_is_written_and_fences_its_old_epoch() -> None:
    part = leader()
    assert marker(part, 4, False) is not None
    assert part.log.aborted_index() == [] and part.last_stable_offset == 1
    with pytest.raises(KetchError) as info:
        append(part, txn(3), verified=True)
    assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH


def test_non_transactional_data_during_an_open_transaction_is_refused() -> None:
    part = leader()
    append(part, txn(0), verified=True)
    plain = make_batch(0, 1, producer_id=PID, producer_epoch=0, base_sequence=2)
    with pytest.raises(KetchError) as info:
        append(part, plain)
    assert info.value.code == ErrorCode.INVALID_TXN_STATE


def test_marker_verdict_is_rule_4() -> None:
    assert marker_verdict(None, 1, 0) == WriteMarker(-1)
    entry = ProducerEntry(1, 2, (), 0, txn_first_offset=10)
    assert marker_verdict(entry, 1, 3) == WriteMarker(10)
    assert isinstance(marker_verdict(entry, 1, 2), SkipMarker)
    assert isinstance(marker_verdict(entry, 1, 1), SkipMarker)


def test_a_version_1_snapshot_still_decodes_with_no_open_transaction() -> None:
    import struct

    v1 = struct.pack(">BqhqI", 1, 5, 2, 100, 1) + struct.pack(">iiqqq", 0, 1, 10, 11, 100)
    entry = ProducerEntry.decode(v1)
    assert (entry.producer_id, entry.epoch, entry.txn_first_offset, entry.last_seq) == (5, 2, -1, 1)
    table = ProducerStateTable.decode(struct.pack(">BI", 1, 1) + struct.pack(">I", len(v1)) + v1)
    assert table.get(5) == entry
    again = ProducerEntry(5, 2, entry.batches, 100, txn_first_offset=10)
    assert ProducerEntry.decode(again.encode()) == again


def test_a_follower_derives_the_index_and_leads_with_it() -> None:
    lead = leader()
    append(lead, txn(0), verified=True)
    marker(lead, 1, False)
    append(lead, txn(1), verified=True)
    follower = Partition("t", 0, MemoryPartitionLog())
    follower.become_follower(1, 1)
    data = lead.log.read(0, 1 << 20)
    follower.apply_fetch_answer(FetchAnswer(1, 0, high_watermark=lead.high_watermark, records=data))
    assert follower.log.aborted_index() == lead.log.aborted_index()
    follower.become_leader(2, (1, 2), (2,), 2, 2, lag_time_max_ms=1000, now_ms=0)
    assert follower.last_stable_offset == lead.last_stable_offset == 3
    assert marker(follower, 2, True) is not None and follower.last_stable_offset == 6


def test_retention_trims_the_index_and_a_lost_start_does_not_hold_the_lso_below_the_log() -> None:
    part = leader()
    append(part, txn(0, pid=1), verified=True)  # 0-1, open
    append(part, txn(0, pid=2), verified=True)  # 2-3
    marker(part, 1, False, pid=2)  # 4: abort
    append(part, make_batch(0, 1))  # 5
    part.log.delete_before(5)
    assert part.log.aborted_index() == []
    assert part.last_stable_offset == 5  # pid 1's transaction started below the log start
    assert marker(part, 1, False, pid=1) is not None and part.last_stable_offset == 7


# -- the Hypothesis interleaving ----------------------------------------------------------------


def replay(log: MemoryPartitionLog) -> tuple[dict[int, int], dict[int, int], list[tuple[int, int, int]]]:
    """(pid -> epoch, pid -> open transaction's first offset, aborted (pid, first, marker))
    from the stored batches (the log is never trimmed from the front here)."""
    epochs: dict[int, int] = {}
    open_first: dict[int, int] = {}
    aborted = []
    data = log.read(log.log_start_offset, 1 << 30) if log.log_end_offset > log.log_start_offset else b""
    at = 0
    for h in iter_headers(data):
        raw = data[at : at + h.size]
        at += h.size
        if h.producer_id < 0:
            continue
        epochs[h.producer_id] = h.producer_epoch
        if h.is_control:
            first = open_first.pop(h.producer_id, None)
            if first is not None and not marker_is_commit(raw):
                aborted.append((h.producer_id, first, h.base_offset))
        elif h.is_transactional:
            open_first.setdefault(h.producer_id, h.base_offset)
    return epochs, open_first, aborted


OPS = st.lists(
    st.tuples(st.sampled_from(["data", "commit", "abort", "stale", "late", "plain", "truncate"]), st.integers(1, 2)),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(ops=OPS, cuts=st.lists(st.integers(0, 8), min_size=60, max_size=60))
def test_marker_rule_and_lso_against_a_replay(ops: list[tuple[str, int]], cuts: list[int]) -> None:
    log = MemoryPartitionLog()
    part, leader_epoch = leader(log), 1
    coordinator = {1: 0, 2: 0}  # each producer's current epoch at the coordinator
    for i, (op, pid) in enumerate(ops):
        epochs, open_first, _ = replay(log)
        end = log.log_end_offset
        e = coordinator[pid]
        if op == "data":
            seq = next_seq(log, pid, e)
            records = txn(e, seq=seq, pid=pid)
            to_verify = part.transaction_to_verify(records)
            starting = pid not in open_first or epochs.get(pid) != e
            assert (to_verify is not None) == (starting and epochs.get(pid, -1) <= e)
            if epochs.get(pid, -1) > e:  # a marker bumped past the producer (cannot happen here)
                continue
            append(part, records, verified=to_verify == (pid, e))
            assert log.log_end_offset == end + 2
        elif op in ("commit", "abort"):
            coordinator[pid] = e + 1
            written = marker(part, e + 1, op == "commit", pid=pid)
            assert (written is not None) == (epochs.get(pid, -1) < e + 1)
        elif op == "stale":
            assert marker(part, e, pid % 2 == 0, pid=pid) is None or epochs.get(pid, -1) < e
        elif op == "late" and e > 0:
            with pytest.raises(KetchError) as info:
                append(part, txn(e - 1, seq=50, pid=pid), verified=False)
            known = epochs.get(pid)
            if known is None:  # accepted by the sequence rules, but it would start an unverified transaction
                assert info.value.code == ErrorCode.INVALID_TXN_STATE
            elif known >= e:  # the marker of epoch e is stored: the old epoch is fenced
                assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH
            else:  # a truncation removed the marker: only the bogus sequence refuses it
                assert info.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
            assert log.log_end_offset == end
        elif op == "plain":
            append(part, make_batch(0, 1))
        elif op == "truncate":
            log.truncate_to(log.log_start_offset + (end - log.log_start_offset) * cuts[i] // 8)
            leader_epoch += 1
            part = leader(log, leader_epoch)
        check(part, log)


def next_seq(log: MemoryPartitionLog, pid: int, epoch: int) -> int:
    entry = log.producer_state.get(pid)
    return entry.last_seq + 1 if entry is not None and entry.epoch == epoch else 0


def check(part: Partition, log: MemoryPartitionLog) -> None:
    _, open_first, aborted = replay(log)
    assert part.high_watermark == log.log_end_offset  # one replica
    assert part.last_stable_offset == min([part.high_watermark, *open_first.values()])
    assert [(t.producer_id, t.first_offset, t.last_offset) for t in log.aborted_index()] == aborted
    for offset in range(log.log_start_offset, log.log_end_offset + 1, 3):
        read = part.read(offset, 1 << 20, read_committed=True)
        headers = iter_headers(read.records)
        assert all(h.last_offset < part.last_stable_offset for h in headers)
        upper = headers[-1].next_offset if headers else offset
        want = tuple((p, f) for p, f, last in aborted if last >= offset and f < upper) if headers else ()
        assert read.aborted == want and read.last_stable_offset == part.last_stable_offset
