"""Hypothesis: two producer sessions sharing one transactional id, against every delay, retry and failover.

The machine plays the clients and the driver of coordinator.py's contract.
Two producer sessions (A and B) call InitProducerId, AddPartitionsToTxn,
AddOffsetsToTxn, verify_only and EndTxn with what they last heard; every
EndTxn ever sent may arrive again later (delayed, duplicated, reordered), any
marker job ever issued may report ``markers_written`` again (stale or
duplicate), time advances and ``tick`` aborts, and a failover replaces the
coordinator by ``load`` of the records written so far, round-tripped
through their bytes. Each run is one kind of client: TV2 (every EndTxn bumps
the epoch, Ketch's clients) or TV1 (Kafka clients below EndTxn v5: a client's
EndTxn keeps it; timeouts and fences still bump). A transaction is (pid, data
epoch, n), n counting the moves into Ongoing, since TV1 transactions share an
epoch. Invariants, checked around every call:

- the id's epoch never decreases while its producer id stays; a new producer
  id starts at epoch 0 and was never used before;
- every marker job ends the transaction that was Ongoing just before, with an
  epoch one above its data epoch (TV1 from a client's EndTxn: its data
  epoch); a job re-issued after a failover is one issued before;
- each transaction gets at most one outcome: its marker jobs and every EndTxn
  answered NONE for it agree on commit or abort;
- a call carrying an epoch older than the id's current one changes nothing,
  and is refused unless it is the allowed retry: EndTxn(pid, E - 1) with the
  outcome of the transaction that a client or the timeout ended (after a
  fence, never); ``verify`` never changes anything;
- ``markers_written`` (with the job, as the driver sends it) completes a
  Prepare state only when it reports that state's own job (pid, E, outcome);
  every other report is a no-op;
- an EndTxn(pid, e) answered NONE with (pid, E) leaves the id at (pid, E) in
  the Prepare/Complete state of that outcome, having ended the transaction of
  epoch e, and E = e + 1 (E = e after a TV1 EndTxn);
- every refusal of a producer's call names the id and the producer id and
  epoch the call carried;
- the state of each TxnState obeys state.py (partitions only while a
  transaction is open or ending, ``ended_by`` only once it ended);
- loading the records gives the live state and the same pending marker jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coordinator.transactions import (
    MAX_TXN_EPOCH,
    TV1,
    TV2,
    MarkerJob,
    TransactionCoordinator,
    TransactionMetadata,
    TxnConfig,
    TxnResult,
    TxnState,
    decode_record,
    encode_record,
)
from coordinator.transactions.state import PREPARING
from ketch.errors import ErrorCode
from ketch.topic_partition import TopicPartition

TID = "tx"
CONFIG = TxnConfig(max_timeout_ms=5000, default_timeout_ms=1000)
SESSIONS = st.sampled_from(["A", "A", "A", "B"])  # B, the other session, interrupts now and then
PARTITIONS = st.lists(st.sampled_from([TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)]))
OFFSETS = TopicPartition("__consumer_offsets", 4)


class TxnMachine(RuleBasedStateMachine):
    @initialize(start_epoch=st.sampled_from([None, 1, MAX_TXN_EPOCH - 2]), version=st.sampled_from([TV1, TV2]))
    def setup(self, start_epoch: int | None, version: int) -> None:
        self.version = version  # the clients' EndTxn transaction version
        self.transaction = 0  # n: the moves into Ongoing so far
        self.log: list[tuple[bytes, bytes]] = []
        self.next_pid = 100
        self.used_pids: set[int] = set()
        if start_epoch is not None:  # an id that has run many transactions: epoch exhaustion is near
            self.log.append(
                encode_record(
                    TransactionMetadata(TID, 7, start_epoch, 1000, TxnState.COMPLETE_ABORT, ended_by="client")
                )
            )
            self.used_pids.add(7)
        self.coordinator = TransactionCoordinator.load(self._loaded_records(), CONFIG)
        self.now = 0
        self.sessions: dict[str, tuple[int, int]] = {"A": (7, start_epoch or 0), "B": (7, start_epoch or 0)}
        self.sent_ends: list[tuple[int, int, bool]] = []
        self.jobs: list[MarkerJob] = []
        self.outcomes: dict[tuple[int, int, int], bool] = {}  # (pid, data epoch, n) → commit

    # -- the calls, each checked by _call --

    @rule(session=SESSIONS, timeout=st.sampled_from([0, 300, 5000, 6000]))
    def init_producer_id(self, session: str, timeout: int) -> None:
        pid = None
        if self.coordinator.needs_producer_id(TID):
            pid, self.next_pid = self.next_pid, self.next_pid + 1
        result = self._call(lambda: self.coordinator.init_producer_id(TID, timeout, self.now, pid))
        answer = result.response
        if answer.error_code == ErrorCode.NONE:
            assert (answer.producer_id, answer.producer_epoch) == self._current()
            self.sessions[session] = (answer.producer_id, answer.producer_epoch)

    @rule(session=SESSIONS, partitions=PARTITIONS)
    def add_partitions(self, session: str, partitions: list[TopicPartition]) -> None:
        pid, epoch = self.sessions[session]
        self._call(lambda: self.coordinator.add_partitions(TID, pid, epoch, partitions, self.now), pid, epoch)

    @rule(session=SESSIONS)
    def add_offsets(self, session: str) -> None:
        pid, epoch = self.sessions[session]
        self._call(lambda: self.coordinator.add_offsets(TID, pid, epoch, "g", OFFSETS, self.now), pid, epoch)

    @rule(session=SESSIONS, partitions=PARTITIONS)
    def verify(self, session: str, partitions: list[TopicPartition]) -> None:
        pid, epoch = self.sessions[session]
        before = self.coordinator.describe(TID)
        answer = self.coordinator.verify(TID, pid, epoch, partitions)
        assert self.coordinator.describe(TID) == before
        assert answer.error_code == ErrorCode.NONE or f"producer {pid} epoch {epoch}" in answer.error_message
        if answer.error_code == ErrorCode.NONE:
            assert before is not None and before.state is TxnState.ONGOING
            assert (before.producer_id, before.producer_epoch) == (pid, epoch) and set(partitions) <= before.partitions

    @rule(session=SESSIONS, commit=st.booleans())
    def end_txn(self, session: str, commit: bool) -> None:
        pid, epoch = self.sessions[session]
        self.sent_ends.append((pid, epoch, commit))
        answer = self._end(pid, epoch, commit)
        if answer.error_code == ErrorCode.NONE:
            self.sessions[session] = (answer.producer_id, answer.producer_epoch)

    @rule(data=st.data())
    def end_txn_again(self, data: st.DataObject) -> None:
        """An EndTxn sent earlier arrives again: a client retry, a duplicate, or one delayed past later calls."""
        if self.sent_ends:
            self._end(*data.draw(st.sampled_from(self.sent_ends)))

    @rule(data=st.data())
    def markers_written(self, data: st.DataObject) -> None:
        """A marker job reports completion: the current one, or a stale or duplicate report."""
        if self.jobs:
            job = data.draw(st.sampled_from(self.jobs))
            before = self.coordinator.describe(TID)
            pid, epoch = job.producer_id, job.producer_epoch
            result = self._call(lambda: self.coordinator.markers_written(TID, pid, epoch, job))
            if result.records:  # only the job of the Prepare state itself completes it
                assert before is not None and before.state in PREPARING
                current = (before.producer_id, before.producer_epoch, before.commit)
                assert current == (job.producer_id, job.producer_epoch, job.commit)

    @rule(ms=st.integers(0, 800))
    def tick(self, ms: int) -> None:
        self.now += ms
        self._call(lambda: self.coordinator.tick(self.now))

    @rule()
    def failover(self) -> None:
        loaded = TransactionCoordinator.load(self._loaded_records(), CONFIG)
        assert set(loaded.pending_markers()) <= set(self.jobs)
        self.coordinator = loaded

    # -- invariants --

    @invariant()
    def loading_the_records_gives_the_live_state(self) -> None:
        loaded = TransactionCoordinator.load(self._loaded_records(), CONFIG)
        assert loaded.listing() == self.coordinator.listing()
        assert loaded.pending_markers() == self.coordinator.pending_markers()

    @invariant()
    def each_state_has_its_shape(self) -> None:
        meta = self.coordinator.describe(TID)
        if meta is None:
            return
        is_open = meta.state is TxnState.ONGOING or meta.state in PREPARING
        assert bool(meta.partitions) == is_open and (meta.start_time_ms >= 0) == is_open
        assert OFFSETS in meta.partitions if meta.group_ids else True
        assert (meta.ended_by != "") == (meta.state not in (TxnState.EMPTY, TxnState.ONGOING))
        if meta.transaction_version == TV1:
            assert self.version == TV1 and meta.ended_by == "client"
        if meta.state is TxnState.ONGOING:
            assert meta.producer_epoch <= MAX_TXN_EPOCH  # its end bump fits in int16
        assert 0 < meta.timeout_ms <= CONFIG.max_timeout_ms

    # -- helpers --

    def _end(self, pid: int, epoch: int, commit: bool) -> Any:
        result = self._call(
            lambda: self.coordinator.end_txn(TID, pid, epoch, commit, self.now, self.version), pid, epoch, commit
        )
        answer = result.response
        if answer.error_code == ErrorCode.NONE:
            after = self.coordinator.describe(TID)
            assert after is not None and after.state not in (TxnState.EMPTY, TxnState.ONGOING)
            bumped = epoch if after.transaction_version == TV1 else epoch + 1
            assert (
                (after.producer_id, after.producer_epoch)
                == (answer.producer_id, answer.producer_epoch)
                == (pid, bumped)
            )
            assert after.ended_epoch == epoch and after.commit == commit
            self._decide(pid, epoch, commit)
        return answer

    def _call(
        self,
        call: Callable[[], TxnResult[Any]],
        pid: int | None = None,
        epoch: int | None = None,
        retry_of: bool | None = None,  # EndTxn(commit=retry_of): the one call an old epoch may get NONE for
    ) -> TxnResult[Any]:
        before = self.coordinator.describe(TID)
        result = call()
        after = self.coordinator.describe(TID)
        code = getattr(result.response, "error_code", None)
        event(f"{before.state if before else 'unknown'} -> {after.state if after else 'unknown'}: {code!r}")
        self.log += [encode_record(meta) for meta in result.records]
        if (
            after is not None
            and after.state is TxnState.ONGOING
            and (before is None or before.state is not TxnState.ONGOING)
        ):
            self.transaction += 1
        if result.records:
            assert result.records[-1] == after
        else:
            assert after == before and not result.markers
        if pid is not None and code not in (None, ErrorCode.NONE):  # a refusal names the id and what it got
            assert f"transactional id {TID!r}" in result.response.error_message
            assert f"producer {pid} epoch {epoch}" in result.response.error_message
        if before is not None and pid == before.producer_id and epoch is not None and epoch < before.producer_epoch:
            assert (after, result.records, result.markers) == (before, (), ())  # an old epoch changes nothing
            if code == ErrorCode.NONE:  # ... and is refused, but for the retry of the EndTxn that ended it
                assert retry_of is not None and epoch == before.producer_epoch - 1
                assert before.ended_by in ("client", "timeout") and before.commit == retry_of
        if after is not None:
            if before is not None and after.producer_id == before.producer_id:
                assert after.producer_epoch >= before.producer_epoch
            else:
                assert after.producer_epoch == 0 and after.producer_id not in self.used_pids
                event("a new producer id" + (" (epoch exhausted)" if before else ""))
            self.used_pids.add(after.producer_id)
        for job in result.markers:
            assert before is not None and before.state is TxnState.ONGOING
            bump = 0 if job.transaction_version == TV1 else 1
            assert job.producer_id == before.producer_id and job.producer_epoch == before.producer_epoch + bump
            assert set(job.partitions) == before.partitions
            self.jobs.append(job)
            self._decide(job.producer_id, before.producer_epoch, job.commit)
        return result

    def _decide(self, pid: int, data_epoch: int, commit: bool) -> None:
        key = (pid, data_epoch, self.transaction)
        assert self.outcomes.setdefault(key, commit) == commit, "a transaction got two outcomes"

    def _current(self) -> tuple[int, int]:
        meta = self.coordinator.describe(TID)
        assert meta is not None
        return meta.producer_id, meta.producer_epoch

    def _loaded_records(self) -> list[TransactionMetadata]:
        return [decode_record(key, value) for key, value in self.log]


TestTxnMachine = TxnMachine.TestCase
TestTxnMachine.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
