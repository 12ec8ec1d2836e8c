"""The transaction coordinator, by example: each rule of common3.md and each error code it answers."""

from __future__ import annotations

import itertools

import pytest

from coordinator.transactions import (
    MAX_EPOCH,
    MAX_TXN_EPOCH,
    VALID_PREVIOUS_STATES,
    IllegalTxnTransition,
    MarkerJob,
    TransactionCoordinator,
    TransactionMetadata,
    TxnAnswer,
    TxnConfig,
    TxnResult,
    TxnState,
)
from coordinator.transactions.state import transition
from ketch.errors import ErrorCode
from ketch.topic_partition import TopicPartition

TID = "tx"
A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
OFFSETS = TopicPartition("__consumer_offsets", 7)


class Harness:
    """A coordinator, the records it wrote, and the node's producer ids."""

    def __init__(self, config: TxnConfig | None = None) -> None:
        self.config = config or TxnConfig()
        self.coordinator = TransactionCoordinator.load((), self.config)
        self.records: list[TransactionMetadata] = []
        self.ids = itertools.count(1000)

    def keep(self, result: TxnResult[TxnAnswer]) -> TxnAnswer:
        self.records += result.records
        return result.response

    def init(self, tid: str = TID, timeout_ms: int = 10_000, now_ms: int = 0) -> TxnAnswer:
        pid = next(self.ids) if self.coordinator.needs_producer_id(tid) else None
        return self.keep(self.coordinator.init_producer_id(tid, timeout_ms, now_ms, pid))

    def add(self, pid: int, epoch: int, *parts: TopicPartition, now_ms: int = 0) -> TxnAnswer:
        return self.keep(self.coordinator.add_partitions(TID, pid, epoch, parts, now_ms))

    def end(self, pid: int, epoch: int, commit: bool, now_ms: int = 0) -> TxnResult[TxnAnswer]:
        result = self.coordinator.end_txn(TID, pid, epoch, commit, now_ms)
        self.records += result.records
        return result

    def state(self) -> TransactionMetadata:
        meta = self.coordinator.describe(TID)
        assert meta is not None
        return meta


def refused(answer: TxnAnswer, code: ErrorCode, pid: int, epoch: int, *also: str) -> None:
    """The refusal has ``code`` and names the id, the producer id and epoch received, and the rest."""
    assert answer.error_code == code, answer
    for text in (repr(TID), f"producer {pid} epoch {epoch}", *also):
        assert text in answer.error_message, (text, answer.error_message)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_init_producer_id_gives_a_new_id_then_bumps_the_epoch_fencing_the_older_session(h: Harness) -> None:
    first = h.init()
    assert (first.error_code, first.producer_id, first.producer_epoch) == (ErrorCode.NONE, 1000, 0)
    assert h.state() == TransactionMetadata(TID, 1000, 0, 10_000, TxnState.EMPTY, last_update_ms=0)
    assert not h.coordinator.needs_producer_id(TID)
    second = h.init(now_ms=5)
    assert (second.producer_id, second.producer_epoch) == (1000, 1)
    refused(h.add(1000, 0, A0), ErrorCode.PRODUCER_FENCED, 1000, 0, "epoch 1", "close this producer")
    assert h.add(1000, 1, A0).error_code == ErrorCode.NONE


@pytest.mark.parametrize(("asked", "stored"), [(0, 60_000), (1, 1), (900_000, 900_000)])
def test_transaction_timeout_zero_means_the_default_and_the_max_is_allowed(h: Harness, asked: int, stored: int) -> None:
    assert h.init(timeout_ms=asked).error_code == ErrorCode.NONE
    assert h.state().timeout_ms == stored


@pytest.mark.parametrize("timeout_ms", [-1, 900_001])
def test_a_transaction_timeout_out_of_range_is_refused_and_writes_nothing(h: Harness, timeout_ms: int) -> None:
    answer = h.init(timeout_ms=timeout_ms)
    assert answer.error_code == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert repr(TID) in answer.error_message and "900000" in answer.error_message
    assert h.records == [] and h.coordinator.describe(TID) is None


def test_add_partitions_opens_the_transaction_and_a_repeat_writes_nothing(h: Harness) -> None:
    h.init()
    assert h.add(1000, 0, A0, now_ms=50) == TxnAnswer(ErrorCode.NONE, "")
    assert (h.state().state, h.state().partitions, h.state().start_time_ms) == (TxnState.ONGOING, {A0}, 50)
    written = len(h.records)
    assert h.add(1000, 0, A0, now_ms=60).error_code == ErrorCode.NONE
    assert len(h.records) == written
    h.add(1000, 0, A1, B0, now_ms=70)
    assert h.state().partitions == {A0, A1, B0} and h.state().start_time_ms == 50
    assert h.records[-1] == h.state()


def test_add_offsets_adds_the_group_and_its_offsets_partition(h: Harness) -> None:
    h.init()
    assert h.keep(h.coordinator.add_offsets(TID, 1000, 0, "g", OFFSETS, 1)).error_code == ErrorCode.NONE
    assert (h.state().partitions, h.state().group_ids) == ({OFFSETS}, {"g"})
    refused(h.keep(h.coordinator.add_offsets(TID, 1000, 0, "", OFFSETS, 1)), ErrorCode.INVALID_GROUP_ID, 1000, 0)


def test_unknown_ids_wrong_producers_and_unissued_epochs_are_refused(h: Harness) -> None:
    refused(h.add(1, 0, A0), ErrorCode.INVALID_PRODUCER_ID_MAPPING, 1, 0, "InitProducerId")
    h.init()
    refused(h.add(999, 0, A0), ErrorCode.INVALID_PRODUCER_ID_MAPPING, 999, 0, "producer is 1000 epoch 0")
    refused(h.add(1000, 3, A0), ErrorCode.INVALID_PRODUCER_EPOCH, 1000, 3, "epoch 0")
    refused(h.end(1000, 0, True).response, ErrorCode.INVALID_TXN_STATE, 1000, 0, "no transaction is open")
    refused(h.add(1000, 0), ErrorCode.INVALID_REQUEST, 1000, 0, "names no partition")
    assert h.records == h.records[:1]  # only the InitProducerId record


def test_end_txn_bumps_the_epoch_writes_markers_with_it_then_completes(h: Harness) -> None:
    h.init()
    h.add(1000, 0, B0, A0)
    result = h.end(1000, 0, True, now_ms=9)
    assert result.response == TxnAnswer(ErrorCode.NONE, "", 1000, 1)
    assert result.markers == (MarkerJob(TID, 1000, 1, True, (A0, B0)),)
    assert (h.state().state, h.state().producer_epoch, h.state().ended_by) == (TxnState.PREPARE_COMMIT, 1, "client")
    assert h.coordinator.pending_markers() == result.markers
    refused(h.add(1000, 1, A1), ErrorCode.CONCURRENT_TRANSACTIONS, 1000, 1, "PrepareCommit", "retry")
    assert h.coordinator.markers_written(TID, 1000, 0).records == ()  # not this job's epoch
    done = h.coordinator.markers_written(TID, 1000, 1)
    assert done.records == (h.state(),) and h.state().state is TxnState.COMPLETE_COMMIT
    assert (h.state().partitions, h.state().start_time_ms) == (frozenset(), -1)
    assert h.coordinator.pending_markers() == ()
    assert h.coordinator.markers_written(TID, 1000, 1).records == ()  # a duplicate report
    assert h.add(1000, 1, A1).error_code == ErrorCode.NONE  # the next transaction, at the bumped epoch
    assert (h.state().state, h.state().producer_epoch, h.state().ended_by) == (TxnState.ONGOING, 1, "")


@pytest.mark.parametrize("complete", [False, True])
def test_a_retried_end_txn_is_answered_again_from_the_state_and_writes_nothing(h: Harness, complete: bool) -> None:
    h.init()
    h.add(1000, 0, A0)
    h.end(1000, 0, False)
    if complete:
        h.coordinator.markers_written(TID, 1000, 1)
    before = h.state()
    again = h.end(1000, 0, False)
    assert again == TxnResult(TxnAnswer(ErrorCode.NONE, "", 1000, 1))
    refused(h.end(1000, 0, True).response, ErrorCode.INVALID_TXN_STATE, 1000, 0, "already aborted")
    assert h.state() == before


def test_a_delayed_end_txn_of_one_transaction_never_touches_the_next(h: Harness) -> None:
    h.init()
    h.add(1000, 0, A0)
    h.end(1000, 0, True)
    h.coordinator.markers_written(TID, 1000, 1)
    h.add(1000, 1, A0)  # transaction N + 1
    before, written = h.state(), len(h.records)
    for commit in (True, False):
        refused(h.end(1000, 0, commit).response, ErrorCode.PRODUCER_FENCED, 1000, 0, "epoch 1")
    assert h.coordinator.markers_written(TID, 1000, 1).records == ()  # N's late completion report
    assert h.coordinator.verify(TID, 1000, 0, [A0]).error_code == ErrorCode.PRODUCER_FENCED  # N's late data
    assert (h.state(), len(h.records)) == (before, written)
    assert h.end(1000, 1, False).response == TxnAnswer(ErrorCode.NONE, "", 1000, 2)


def test_verify_only_answers_none_only_for_the_ongoing_epoch_and_added_partitions(h: Harness) -> None:
    h.init()
    refused(h.coordinator.verify(TID, 1000, 0, [A0]), ErrorCode.INVALID_TXN_STATE, 1000, 0, "AddPartitionsToTxn")
    h.add(1000, 0, A0)
    assert h.coordinator.verify(TID, 1000, 0, [A0]).error_code == ErrorCode.NONE
    refused(h.coordinator.verify(TID, 1000, 0, [A0, A1]), ErrorCode.INVALID_TXN_STATE, 1000, 0, "a-1 are not")
    refused(h.coordinator.verify(TID, 1001, 0, [A0]), ErrorCode.INVALID_PRODUCER_ID_MAPPING, 1001, 0)
    h.end(1000, 0, True)
    refused(h.coordinator.verify(TID, 1000, 0, [A0]), ErrorCode.PRODUCER_FENCED, 1000, 0)
    refused(h.coordinator.verify(TID, 1000, 1, [A0]), ErrorCode.CONCURRENT_TRANSACTIONS, 1000, 1, "retry")
    assert len(h.records) == 3  # init, add, end: verify wrote nothing


def test_init_producer_id_on_an_ongoing_transaction_fences_it_with_an_abort(h: Harness) -> None:
    h.init()
    h.add(1000, 0, A0, OFFSETS)
    result = h.coordinator.init_producer_id(TID, 10_000, 5, None)  # the new session
    assert result.response.error_code == ErrorCode.CONCURRENT_TRANSACTIONS
    assert result.markers == (MarkerJob(TID, 1000, 1, False, (OFFSETS, A0)),)
    assert (h.state().state, h.state().producer_epoch, h.state().ended_by) == (TxnState.PREPARE_ABORT, 1, "fence")
    for commit in (True, False):  # the zombie can neither commit nor "retry" an abort
        refused(h.end(1000, 0, commit).response, ErrorCode.PRODUCER_FENCED, 1000, 0, "fenced")
    refused(h.add(1000, 0, A1), ErrorCode.PRODUCER_FENCED, 1000, 0)
    retry = h.coordinator.init_producer_id(TID, 10_000, 6, None)  # while the abort's markers are written
    assert (retry.response.error_code, retry.records, retry.markers) == (ErrorCode.CONCURRENT_TRANSACTIONS, (), ())
    h.coordinator.markers_written(TID, 1000, 1)
    assert h.state().state is TxnState.COMPLETE_ABORT
    refused(h.end(1000, 0, False).response, ErrorCode.PRODUCER_FENCED, 1000, 0)
    assert h.init().producer_epoch == 2


def test_timeout_aborts_with_a_bump_and_the_producer_may_recover_with_an_abort(h: Harness) -> None:
    h.init(timeout_ms=1000)
    h.add(1000, 0, A0, now_ms=100)
    assert h.coordinator.tick(1100) == TxnResult(None)  # exactly the timeout: not older yet
    result = h.coordinator.tick(1101)
    assert result.markers == (MarkerJob(TID, 1000, 1, False, (A0,)),)
    assert result.records == (h.state(),) and h.state().ended_by == "timeout"
    assert h.coordinator.tick(5000) == TxnResult(None)
    refused(h.add(1000, 0, A1), ErrorCode.PRODUCER_FENCED, 1000, 0, "timed out", "EndTxn(abort)")
    refused(h.end(1000, 0, True).response, ErrorCode.INVALID_TXN_STATE, 1000, 0, "timed out", "EndTxn(abort)")
    assert h.end(1000, 0, False) == TxnResult(TxnAnswer(ErrorCode.NONE, "", 1000, 1))
    h.coordinator.markers_written(TID, 1000, 1)
    assert h.end(1000, 0, False).response == TxnAnswer(ErrorCode.NONE, "", 1000, 1)  # still, in CompleteAbort
    assert h.add(1000, 1, A0, now_ms=6000).error_code == ErrorCode.NONE


def test_an_exhausted_epoch_gets_a_new_producer_id(h: Harness) -> None:
    h.coordinator = TransactionCoordinator.load(
        [TransactionMetadata(TID, 7, MAX_TXN_EPOCH - 1, 10_000, TxnState.EMPTY)], h.config
    )
    assert not h.coordinator.needs_producer_id(TID)
    assert h.init().producer_epoch == MAX_TXN_EPOCH
    h.add(7, MAX_TXN_EPOCH, A0)
    assert h.end(7, MAX_TXN_EPOCH, True).response.producer_epoch == MAX_EPOCH  # the last bump still fits
    h.coordinator.markers_written(TID, 7, MAX_EPOCH)
    refused(h.add(7, MAX_EPOCH, A0), ErrorCode.PRODUCER_FENCED, 7, MAX_EPOCH, "exhausted", "InitProducerId")
    assert h.coordinator.needs_producer_id(TID)
    with pytest.raises(ValueError, match="needs a new producer id"):
        h.coordinator.init_producer_id(TID, 10_000, 0, None)
    fresh = h.init()
    assert (fresh.producer_id, fresh.producer_epoch) == (1000, 0)
    assert (h.state().state, h.state().ended_by) == (TxnState.EMPTY, "")
    refused(h.add(7, MAX_EPOCH, A0), ErrorCode.INVALID_PRODUCER_ID_MAPPING, 7, MAX_EPOCH, "producer is 1000")


def test_loading_the_records_gives_the_same_state_and_the_pending_marker_jobs(h: Harness) -> None:
    h.init()
    h.add(1000, 0, A0)
    h.keep(h.coordinator.init_producer_id("other", 0, 0, 2000))
    h.keep(h.coordinator.add_offsets("other", 2000, 0, "g", OFFSETS, 3))
    jobs = h.end(1000, 0, True).markers
    loaded = TransactionCoordinator.load(h.records, h.config)
    assert loaded.listing() == h.coordinator.listing()
    assert loaded.pending_markers() == jobs
    assert [m.transactional_id for m in loaded.listing(["Ongoing"])] == ["other"]
    assert loaded.listing(["Dead"]) == [] and loaded.describe("nobody") is None


def test_the_state_table_is_the_only_way_to_move() -> None:
    for old, new in itertools.product(TxnState, TxnState):
        meta = TransactionMetadata(TID, 1, 0, 1000, old)
        if old in VALID_PREVIOUS_STATES[new]:
            assert transition(meta, new).state is new
        else:
            with pytest.raises(IllegalTxnTransition):
                transition(meta, new)
