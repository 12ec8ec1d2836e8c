"""Kafka's transaction version 1 (issue 18), pure: the coordinator's TV1 end, retry, timeout and
fence (coordinator/transactions/coordinator.py), and the partition's TV1 marker rule next to the
unchanged TV2 one (replication/transactions.py, replication/producer_state.py)."""

from __future__ import annotations

import pytest

from coordinator.transactions import TV1, TV2, MarkerJob, TransactionCoordinator, TxnAnswer, TxnResult, TxnState
from ketch.errors import ErrorCode, KetchError
from replication.follower import FetchAnswer
from replication.memory_log import MemoryPartitionLog
from replication.partition import AppendResult, Partition
from replication.producer_state import ProducerEntry
from replication.transactions import SkipMarker, WriteMarker, marker_verdict
from tests.batches import make_batch
from tests.test_txn_coordinator import A0, A1, OFFSETS, TID, Harness, refused
from tests.test_txn_partition import PID, append, leader, txn

# -- the coordinator ----------------------------------------------------------------------------


def end1(h: Harness, pid: int, epoch: int, commit: bool, now_ms: int = 0) -> TxnResult[TxnAnswer]:
    result = h.coordinator.end_txn(TID, pid, epoch, commit, now_ms, transaction_version=TV1)
    h.records += result.records
    return result


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_tv1_end_keeps_the_epoch_and_its_markers_carry_it(h: Harness) -> None:
    h.init()
    for n, commit in enumerate((True, False, True)):  # three transactions of one producer session
        assert h.add(1000, 0, A0, now_ms=n).error_code == ErrorCode.NONE
        result = end1(h, 1000, 0, commit)
        assert result.response == TxnAnswer(ErrorCode.NONE, "", 1000, 0)
        assert result.markers == (MarkerJob(TID, 1000, 0, commit, (A0,), TV1),)
        prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        meta = h.state()
        assert (meta.state, meta.producer_epoch, meta.ended_by, meta.transaction_version) == (prepare, 0, "client", 1)
        assert h.coordinator.pending_markers() == result.markers
        refused(h.add(1000, 0, A1), ErrorCode.CONCURRENT_TRANSACTIONS, 1000, 0, "retry")
        assert h.coordinator.markers_written(TID, 1000, 0).records == (h.state(),)
        assert h.state().state in (TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
        assert h.state().transaction_version == TV1
    h.add(1000, 0, A0)
    assert h.state().transaction_version == TV2  # an open transaction has no version until its EndTxn
    loaded = TransactionCoordinator.load(h.records, h.config)  # the records give back the same state
    assert loaded.describe(TID) == h.state()


@pytest.mark.parametrize("complete", [False, True])
def test_a_tv1_retry_is_answered_from_the_state_and_the_other_outcome_is_invalid(h: Harness, complete: bool) -> None:
    h.init()
    h.add(1000, 0, A0)
    end1(h, 1000, 0, True)
    if complete:
        h.coordinator.markers_written(TID, 1000, 0)
    before, written = h.state(), len(h.records)
    assert end1(h, 1000, 0, True) == TxnResult(TxnAnswer(ErrorCode.NONE, "", 1000, 0))  # no records, no job
    refused(end1(h, 1000, 0, False).response, ErrorCode.INVALID_TXN_STATE, 1000, 0, "already committed")
    refused(end1(h, 1000, 1, True).response, ErrorCode.INVALID_PRODUCER_EPOCH, 1000, 1)
    assert (h.state(), len(h.records)) == (before, written)


def test_a_tv1_end_on_no_open_transaction_is_invalid(h: Harness) -> None:
    h.init()
    refused(end1(h, 1000, 0, True).response, ErrorCode.INVALID_TXN_STATE, 1000, 0, "no transaction is open")


def test_a_tv1_timeout_abort_still_bumps_and_fences_the_producer(h: Harness) -> None:
    h.init(timeout_ms=1000)
    h.add(1000, 0, A0, now_ms=100)
    end1(h, 1000, 0, True, now_ms=200)
    h.coordinator.markers_written(TID, 1000, 0)
    h.add(1000, 0, A0, now_ms=300)  # the second transaction at the same epoch
    result = h.coordinator.tick(1301)
    assert result.markers == (MarkerJob(TID, 1000, 1, False, (A0,), TV2),)
    meta = h.state()
    assert (meta.producer_epoch, meta.ended_by, meta.transaction_version) == (1, "timeout", TV2)
    refused(h.add(1000, 0, A1), ErrorCode.PRODUCER_FENCED, 1000, 0, "timed out")
    refused(end1(h, 1000, 0, True).response, ErrorCode.INVALID_TXN_STATE, 1000, 0, "timed out")
    assert end1(h, 1000, 0, False).response == TxnAnswer(ErrorCode.NONE, "", 1000, 1)  # the abort, answered


def test_a_tv1_transaction_is_fenced_by_init_producer_id_with_a_bump(h: Harness) -> None:
    h.init()
    h.add(1000, 0, A0)
    end1(h, 1000, 0, False)
    h.coordinator.markers_written(TID, 1000, 0)
    h.add(1000, 0, A0, OFFSETS)
    result = h.coordinator.init_producer_id(TID, 10_000, 5, None)
    assert result.response.error_code == ErrorCode.CONCURRENT_TRANSACTIONS
    assert result.markers == (MarkerJob(TID, 1000, 1, False, (OFFSETS, A0), TV2),)
    for commit in (True, False):
        refused(end1(h, 1000, 0, commit).response, ErrorCode.PRODUCER_FENCED, 1000, 0, "fenced")
    h.coordinator.markers_written(TID, 1000, 1)
    assert h.init().producer_epoch == 2


def test_the_accepted_tv1_anomaly_a_delayed_end_txn_ends_the_next_transaction(h: Harness) -> None:
    """KAFKA-17754, documented in coordinator.py: N and N + 1 share the epoch under TV1."""
    h.init()
    h.add(1000, 0, A0)
    end1(h, 1000, 0, True)
    h.coordinator.markers_written(TID, 1000, 0)
    h.add(1000, 0, A1)  # transaction N + 1
    delayed = end1(h, 1000, 0, True)  # N's EndTxn, delivered again
    assert delayed.markers == (MarkerJob(TID, 1000, 0, True, (A1,), TV1),)


def test_a_stale_report_of_one_tv1_job_does_not_complete_the_next_transaction(h: Harness) -> None:
    h.init()
    h.add(1000, 0, A0)
    (first,) = end1(h, 1000, 0, False).markers
    assert h.coordinator.markers_written(TID, 1000, 0, first).records
    h.add(1000, 0, A0)
    (second,) = end1(h, 1000, 0, True).markers
    assert (first.producer_id, first.producer_epoch) == (second.producer_id, second.producer_epoch)
    assert h.coordinator.markers_written(TID, 1000, 0, first).records == ()  # N's report, again
    assert h.state().state is TxnState.PREPARE_COMMIT
    assert h.coordinator.markers_written(TID, 1000, 0, second).records == (h.state(),)
    assert h.state().state is TxnState.COMPLETE_COMMIT


def test_an_unknown_transaction_version_is_invalid_request(h: Harness) -> None:
    h.init()
    h.add(1000, 0, A0)
    result = h.coordinator.end_txn(TID, 1000, 0, True, 0, transaction_version=3)
    assert (result.response.error_code, result.records) == (ErrorCode.INVALID_REQUEST, ())


# -- the partition ------------------------------------------------------------------------------


def marker(part: Partition, epoch: int, commit: bool, version: int) -> AppendResult | None:
    return part.write_marker(
        PID, epoch, commit, 3, min_insync_replicas=1, timestamp_ms=5, sync=False, transaction_version=version
    )


def test_marker_verdict_tv1_ends_an_open_transaction_of_its_own_epoch_tv2_does_not() -> None:
    open_at_2 = ProducerEntry(PID, 2, (), 0, txn_first_offset=10)
    closed_at_2 = ProducerEntry(PID, 2, (), 0)
    assert marker_verdict(None, PID, 2, TV1) == WriteMarker(-1)
    assert marker_verdict(open_at_2, PID, 2, TV1) == WriteMarker(10)
    assert marker_verdict(open_at_2, PID, 3, TV1) == WriteMarker(10)
    assert isinstance(marker_verdict(closed_at_2, PID, 2, TV1), SkipMarker)  # a duplicate: nothing to end
    assert isinstance(marker_verdict(open_at_2, PID, 1, TV1), SkipMarker)  # stale
    assert isinstance(marker_verdict(open_at_2, PID, 2, TV2), SkipMarker)  # TV2: epoch < E only
    assert marker_verdict(open_at_2, PID, 3, TV2) == WriteMarker(10)
    with pytest.raises(ValueError):
        marker_verdict(open_at_2, PID, 2, 0)


def test_tv1_transactions_share_the_epoch_and_continue_their_sequences() -> None:
    part = leader()
    append(part, txn(0, seq=0), verified=True)  # 0-1
    assert marker(part, 0, True, TV1) is not None  # 2: commit, the epoch stays 0
    assert marker(part, 0, True, TV1) is None  # a duplicate writes nothing
    entry = part.log.producer_state.get(PID)
    assert entry is not None and (entry.epoch, entry.in_transaction, entry.last_seq) == (0, False, 1)
    assert part.transaction_to_verify(txn(0, seq=2)) == (PID, 0)  # the next one needs verification again
    with pytest.raises(KetchError) as info:  # a sequence reset (what TV2 expects) is out of order here
        append(part, txn(0, seq=0, count=3), verified=True)
    assert info.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert append(part, txn(0, seq=0), verified=True).base_offset == 0  # a retry of the first: its offsets
    assert append(part, txn(0, seq=2), verified=True).base_offset == 3  # 3-4, transaction 2
    assert part.last_stable_offset == 3
    assert marker(part, 0, False, TV1) is not None  # 5: abort
    assert part.last_stable_offset == 6 == part.high_watermark
    assert [(t.first_offset, t.last_offset) for t in part.log.aborted_index()] == [(3, 5)]
    assert append(part, txn(0, seq=4), verified=True).base_offset == 6  # transaction 3 continues at 4
    # a follower replaying the same bytes derives the same producer state and index
    follower = Partition("t", 0, MemoryPartitionLog())
    follower.become_follower(1, 1)
    data = part.log.read(0, 1 << 20)
    follower.apply_fetch_answer(FetchAnswer(1, 0, high_watermark=part.high_watermark, records=data))
    assert follower.log.producer_state == part.log.producer_state
    assert follower.log.aborted_index() == part.log.aborted_index()


def test_a_tv2_marker_still_resets_the_sequences_and_fences_the_old_epoch() -> None:
    part = leader()
    append(part, txn(0, seq=0), verified=True)
    assert marker(part, 0, True, TV2) is None  # TV2 ends only a lower epoch
    assert marker(part, 1, True, TV2) is not None
    entry = part.log.producer_state.get(PID)
    assert entry is not None and (entry.epoch, entry.batches) == (1, ())
    with pytest.raises(KetchError) as info:
        append(part, txn(0, seq=2), verified=True)
    assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert append(part, txn(1, seq=0), verified=True).base_offset == 3


def test_a_non_transactional_batch_still_refused_while_a_tv1_transaction_is_open() -> None:
    part = leader()
    append(part, txn(0), verified=True)
    marker(part, 0, True, TV1)
    append(part, txn(0, seq=2), verified=True)
    with pytest.raises(KetchError) as info:
        append(part, make_batch(0, 1, producer_id=PID, producer_epoch=0, base_sequence=4))
    assert info.value.code == ErrorCode.INVALID_TXN_STATE
