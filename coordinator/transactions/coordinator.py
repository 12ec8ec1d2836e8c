"""TransactionCoordinator: every transactional id of one ``__transaction_state`` partition, pure.

Two transaction versions (Kafka 4.x's ``clientTransactionVersion``), chosen
by each EndTxn: TV2 (KIP-890 part 2, ``transaction_version=2``, the default:
Ketch's clients and Kafka clients of EndTxn v5+) and TV1 (Kafka clients of
EndTxn v0-4: every Python Kafka client and librdkafka, which never learn a
new epoch from EndTxn). The rules below are TV2's; "TV1" says where TV1
differs.

One coordinator per partition of ``__transaction_state`` this broker leads.
Calls take the time as ``now_ms`` (wall clock: start times are persisted and
compared with another node's clock after a failover) and producer ids chosen
by the driver (``new_producer_id`` from the node's ProducerIdManager, asked
for only when ``needs_producer_id`` says so); they never block. A call
returns a ``TxnResult`` (results.py): the answer, the new metadata records,
the marker jobs. The state already includes the records' effect when the
call returns (as the group coordinator and Kafka's KRaft controller).

The driver's contract (node/txn_coordinator.py):

1. Load. On becoming leader of partition P: decode every record of P
   (``decode_record``) up to the high watermark, ``load`` them, and start a
   job for each of ``pending_markers()``. Until then COORDINATOR_LOAD_IN_PROGRESS.
2. Calls, one at a time. Append the result's records to P as one batch and
   wait for the commit; then send the answer and start its marker jobs. A
   result without records waits for everything appended before it.
3. Marker jobs: WriteTxnMarkers to every partition's leader (with P's leader
   epoch as the coordinator epoch) until each answers NONE, then
   ``markers_written`` with the job (its records, step 2). A job is never abandoned.
4. ``tick(now_ms)`` every second or so: transaction timeouts (Ongoing only;
   a Prepare* state waits for its markers, however long).
5. Failure. If an append fails or P's leadership is lost, drop this object,
   answer NOT_COORDINATOR, and let the new leader load P: the log is the truth.

The rules (common3.md), as they apply here:

- Rule 2 — every transaction ends with an epoch bump. ``end_txn(pid, e)`` on
  Ongoing at e moves to PrepareCommit/PrepareAbort at e + 1 and answers
  (pid, e + 1); a timeout abort (``tick``) and a fencing abort
  (``init_producer_id`` on Ongoing) bump the same way. The next transaction
  of the producer uses e + 1 (Complete* → Ongoing keeps the epoch).
  TV1: ``end_txn(pid, e, transaction_version=1)`` on Ongoing at e moves to
  Prepare* at the SAME epoch e and answers (pid, e); the next transaction
  uses e again (Kafka's ``prepareAbortOrCommit`` without
  ``supportsEpochBump``). Timeout and fencing aborts still bump (Kafka's TV1
  does too: the TV1 producer is then fenced and must InitProducerId again).
- Rule 4 — the marker job of the transaction (pid, e) carries E = e + 1, so a
  partition ends with it only an open transaction of pid with epoch < E;
  ``markers_written(pid, E)`` completes only a Prepare* state at exactly
  (pid, E), anything else is a no-op. TV1: the job carries E = e and says
  ``transaction_version=1``; a partition ends with it an open transaction of
  pid with epoch <= E and keeps the producer's sequence numbers
  (replication/transactions.py).
- Rule 6 — a call whose epoch is below the id's current epoch is
  PRODUCER_FENCED and changes nothing, except the retry of the EndTxn that
  ended the previous transaction: state Prepare*/Complete* at e + 1, and
  EndTxn(pid, e) with the same outcome (or abort, after a timeout abort) is
  answered NONE with (pid, e + 1) again and writes nothing; commit after a
  timeout abort, or the other outcome, is INVALID_TXN_STATE; after a fencing
  abort every old-epoch call is PRODUCER_FENCED. An epoch above the current
  one was never handed out: INVALID_PRODUCER_EPOCH. Another producer id than
  the id's: INVALID_PRODUCER_ID_MAPPING. TV1: the retry is EndTxn(pid, e)
  while the id is Prepare*/Complete* at e itself after a TV1 end
  (``ended_epoch``): the same outcome is answered NONE with (pid, e) from the
  state and writes nothing; the other outcome is INVALID_TXN_STATE.
- Rule 7 — InitProducerId: unknown id → a new producer id at epoch 0, Empty;
  Empty/Complete* → same producer id at epoch + 1 (fencing the older
  session), or a new producer id at epoch 0 when the epoch is exhausted
  (state.py: MAX_TXN_EPOCH); Ongoing → fencing abort and
  CONCURRENT_TRANSACTIONS; Prepare* → CONCURRENT_TRANSACTIONS. The client
  retries and gets epoch + 1 once the abort completed. A transaction cannot
  start at an exhausted epoch (Add* is PRODUCER_FENCED, saying to call
  InitProducerId), so every end bump fits in int16.
- Rule 8 — the moves are state.py's table; Add* during Prepare* is
  CONCURRENT_TRANSACTIONS; a timeout of 0 means ``default_timeout_ms``,
  anything else outside 1..``max_timeout_ms`` is INVALID_TRANSACTION_TIMEOUT;
  ``tick`` aborts an Ongoing transaction once now_ms - start_time_ms > timeout_ms.

Why a delayed, retried or duplicated EndTxn or marker never decides another
transaction (KAFKA-17754). Transaction N = (pid, e) and N + 1 = (pid, e + 1)
never share an epoch: ending N bumps the id to e + 1 before anything of N + 1
can exist. An EndTxn(pid, e) can move the state only from Ongoing at epoch e,
which is N itself; once N is ending the id's epoch is ≥ e + 1, so the same
EndTxn arriving again is either the answered-from-state retry (the state is
still N's Prepare/Complete, nothing is written, no new marker job) or, once
N + 1 began (Ongoing at e + 1) or InitProducerId bumped again, below the
current epoch and PRODUCER_FENCED, with N + 1 untouched. Its outcome can
never flip: the retry with the other outcome is INVALID_TXN_STATE.

A marker job of N carries E = e + 1 while every batch of N + 1 carries
e + 1 = E, so rule 4 on a partition ends nothing of N + 1 with a delayed or
duplicated marker of N (it ends only epochs < E). ``markers_written`` for N
after N + 1 began is a no-op, since the state is no longer Prepare at (pid, E).
A job re-issued after failover (``pending_markers``) is the same (pid, E,
outcome), so duplicates are idempotent. Late data of N is refused on a
partition N's marker reached (epoch e < E there) and by ``verify`` on any
other (the id's epoch is ≥ e + 1).

What TV1 gives up: all of the above argument rests on N and N + 1 never
sharing an epoch, and under TV1 they do. A delayed or duplicated EndTxn of
N that arrives once N + 1 is Ongoing at the same epoch ends N + 1; a delayed
or duplicated marker of N that reaches a partition after N + 1 opened there
ends N + 1 on that partition (KAFKA-17754, the anomaly KIP-890 part 2
closes). Kafka accepts this for these clients, and so does Ketch: they
cannot learn a new epoch. KIP-890 part 1 still applies (``verify``: a
partition leader stores a transaction's first batch only once the
coordinator says that (pid, epoch) is Ongoing with the partition added), so
late data never opens a transaction the coordinator does not know, and
sequence numbers (kept across TV1 transactions) refuse a late batch of N.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from coordinator.transactions.results import NONE, MarkerJob, TxnAnswer, TxnConfig, TxnResult, marker_job
from coordinator.transactions.state import (
    ENDED,
    MAX_TXN_EPOCH,
    PREPARING,
    TV1,
    TV2,
    TransactionMetadata,
    TxnState,
    transition,
)
from ketch.errors import ErrorCode
from ketch.topic_partition import TopicPartition

R = TypeVar("R")


class TransactionCoordinator:
    def __init__(self, config: TxnConfig | None = None, metadata: dict[str, TransactionMetadata] | None = None) -> None:
        self.config = config or TxnConfig()
        self._txns: dict[str, TransactionMetadata] = metadata if metadata is not None else {}

    @classmethod
    def load(cls, records: Iterable[TransactionMetadata], config: TxnConfig) -> TransactionCoordinator:
        """A coordinator rebuilt from the partition's records in log order: the latest record per id wins."""
        return cls(config, {meta.transactional_id: meta for meta in records})

    # -- InitProducerId --

    def needs_producer_id(self, tid: str) -> bool:
        """Whether ``init_producer_id(tid, ...)`` would hand out a new producer id (unknown id, epoch exhausted)."""
        meta = self._txns.get(tid)
        return meta is None or (meta.state in ENDED and meta.producer_epoch >= MAX_TXN_EPOCH)

    def init_producer_id(
        self, tid: str, timeout_ms: int, now_ms: int, new_producer_id: int | None
    ) -> TxnResult[TxnAnswer]:
        """Rule 7. ``new_producer_id`` must be given when ``needs_producer_id(tid)``; it is unused otherwise."""
        if not tid:
            return TxnResult(
                TxnAnswer(ErrorCode.INVALID_REQUEST, "InitProducerId for transactions needs a transactional id")
            )
        timeout_ms = timeout_ms or self.config.default_timeout_ms
        if not 0 < timeout_ms <= self.config.max_timeout_ms:
            message = (
                f"transactional id {tid!r}: transaction timeout {timeout_ms} ms is outside"
                f" 1..{self.config.max_timeout_ms} ms (transaction_max_timeout_ms); lower transaction.timeout.ms"
            )
            return TxnResult(TxnAnswer(ErrorCode.INVALID_TRANSACTION_TIMEOUT, message))
        meta = self._txns.get(tid)
        if self.needs_producer_id(tid):
            if new_producer_id is None:
                raise ValueError(f"init_producer_id({tid!r}) needs a new producer id (needs_producer_id said so)")
            if meta is None:
                new = TransactionMetadata(tid, new_producer_id, 0, timeout_ms, TxnState.EMPTY, last_update_ms=now_ms)
            else:
                new = _fresh(
                    meta,
                    TxnState.EMPTY,
                    producer_id=new_producer_id,
                    producer_epoch=0,
                    timeout_ms=timeout_ms,
                    last_update_ms=now_ms,
                )
            return self._write(new, TxnAnswer(ErrorCode.NONE, "", new.producer_id, 0))
        assert meta is not None
        if meta.state in ENDED:
            epoch = meta.producer_epoch + 1
            new = _fresh(meta, TxnState.EMPTY, producer_epoch=epoch, timeout_ms=timeout_ms, last_update_ms=now_ms)
            return self._write(new, TxnAnswer(ErrorCode.NONE, "", new.producer_id, new.producer_epoch))
        busy = TxnAnswer(
            ErrorCode.CONCURRENT_TRANSACTIONS,
            f"transactional id {tid!r}: the transaction of producer {meta.producer_id} is being "
            f"{'aborted' if meta.state is TxnState.ONGOING else 'completed'}; retry InitProducerId shortly",
        )
        if meta.state is TxnState.ONGOING:  # fence the older session: abort its transaction with an epoch bump
            return self._end(meta, commit=False, ended_by="fence", now_ms=now_ms, answer=busy)
        return TxnResult(busy)

    # -- AddPartitionsToTxn / AddOffsetsToTxn --

    def add_partitions(
        self, tid: str, pid: int, epoch: int, partitions: Iterable[TopicPartition], now_ms: int
    ) -> TxnResult[TxnAnswer]:
        return self._add(tid, pid, epoch, frozenset(TopicPartition(*tp) for tp in partitions), frozenset(), now_ms)

    def add_offsets(
        self, tid: str, pid: int, epoch: int, group_id: str, offsets_partition: TopicPartition, now_ms: int
    ) -> TxnResult[TxnAnswer]:
        """KIP-447: the group's offsets partition joins the transaction; its marker publishes the offsets."""
        if not group_id:
            message = f"{_got(tid, 'AddOffsetsToTxn', pid, epoch)} names no group; send the consumer's group id"
            return TxnResult(TxnAnswer(ErrorCode.INVALID_GROUP_ID, message))
        return self._add(
            tid, pid, epoch, frozenset({TopicPartition(*offsets_partition)}), frozenset({group_id}), now_ms
        )

    def verify(self, tid: str, pid: int, epoch: int, partitions: Iterable[TopicPartition]) -> TxnAnswer:
        """KIP-890 verify_only: NONE iff (pid, epoch) is Ongoing and every partition was added. Never changes state."""
        meta = self._txns.get(tid)
        call = "AddPartitionsToTxn(verify_only)"
        refusal = _check_producer(tid, meta, pid, epoch, call)
        if refusal is not None:
            return refusal
        assert meta is not None
        if meta.state in PREPARING:
            return _concurrent(meta, _got(tid, call, pid, epoch))
        missing = sorted(frozenset(TopicPartition(*tp) for tp in partitions) - meta.partitions)
        if meta.state is not TxnState.ONGOING or missing:
            names = ", ".join(f"{tp.topic}-{tp.partition}" for tp in missing)
            what = f"partitions {names} are not in the transaction of" if missing else "no transaction is open for"
            message = (
                f"transactional id {tid!r}: {what} producer {pid} epoch {epoch} (state {meta.state});"
                " the producer must AddPartitionsToTxn before producing transactionally"
            )
            return TxnAnswer(ErrorCode.INVALID_TXN_STATE, message)
        return NONE

    # -- EndTxn --

    def end_txn(
        self, tid: str, pid: int, epoch: int, commit: bool, now_ms: int, transaction_version: int = TV2
    ) -> TxnResult[TxnAnswer]:
        """Rules 2 and 6: end the Ongoing transaction (pid, epoch) with a bump (TV1: without), or
        answer its retry from the state."""
        if transaction_version not in (TV1, TV2):
            message = f"transactional id {tid!r}: EndTxn transaction version {transaction_version} is not 1 or 2"
            return TxnResult(TxnAnswer(ErrorCode.INVALID_REQUEST, message))
        meta = self._txns.get(tid)
        outcome = "commit" if commit else "abort"
        if meta is not None and meta.producer_id == pid and meta.ended_by and epoch == meta.ended_epoch:
            return TxnResult(_retry(meta, epoch, commit))
        refusal = _check_producer(tid, meta, pid, epoch, f"EndTxn({outcome})")
        if refusal is not None:
            return TxnResult(refusal)
        assert meta is not None
        got = _got(tid, f"EndTxn({outcome})", pid, epoch)
        if meta.state in PREPARING:
            return TxnResult(_concurrent(meta, got))
        if meta.state is not TxnState.ONGOING:
            message = (
                f"{got}: that is the id's current epoch, but no transaction is open (state {meta.state});"
                " add a partition or offsets before ending a transaction"
            )
            return TxnResult(TxnAnswer(ErrorCode.INVALID_TXN_STATE, message))
        bump = transaction_version == TV2
        answer = TxnAnswer(ErrorCode.NONE, "", pid, epoch + 1 if bump else epoch)
        return self._end(meta, commit=commit, ended_by="client", now_ms=now_ms, answer=answer, bump=bump)

    def markers_written(self, tid: str, pid: int, epoch: int, job: MarkerJob | None = None) -> TxnResult[None]:
        """Every marker of the job (pid, epoch) is written: Prepare* → Complete*; a no-op if the state moved on.

        With ``job`` (the driver passes it), only that very job completes the state: under TV1 the
        transactions N and N + 1 share (pid, epoch), and a report of N's job must not complete
        N + 1 unless the two jobs are equal (same outcome, partitions and version). An equal one
        cannot arrive in the driver: N + 1 reaches Prepare* only after N's one report completed N
        (Add* is CONCURRENT_TRANSACTIONS during Prepare*), and a sender whose partition moved
        never reports (``call`` checks the loaded coordinator)."""
        meta = self._txns.get(tid)
        if meta is None or meta.state not in PREPARING or (meta.producer_id, meta.producer_epoch) != (pid, epoch):
            return TxnResult(None)
        if job is not None and job != marker_job(meta):
            return TxnResult(None)
        done = TxnState.COMPLETE_COMMIT if meta.commit else TxnState.COMPLETE_ABORT
        return self._write(_fresh(meta, done), None)

    # -- timeouts, failover, admin --

    def tick(self, now_ms: int) -> TxnResult[None]:
        """Abort (with a bump) every Ongoing transaction that started more than its timeout ago."""
        records: list[TransactionMetadata] = []
        markers: list[MarkerJob] = []
        for tid in sorted(self._txns):
            meta = self._txns[tid]
            if meta.state is TxnState.ONGOING and now_ms - meta.start_time_ms > meta.timeout_ms:
                result = self._end(meta, commit=False, ended_by="timeout", now_ms=now_ms, answer=None)
                records += result.records
                markers += result.markers
        return TxnResult(None, tuple(records), tuple(markers))

    def pending_markers(self) -> tuple[MarkerJob, ...]:
        """A job for every Prepare* state: what a newly loaded coordinator must (re)send."""
        return tuple(marker_job(self._txns[tid]) for tid in sorted(self._txns) if self._txns[tid].state in PREPARING)

    def describe(self, tid: str) -> TransactionMetadata | None:
        return self._txns.get(tid)

    def listing(self, states: Iterable[str] = ()) -> list[TransactionMetadata]:
        """Every id, sorted, in one of ``states`` (every state when empty)."""
        wanted = set(states)
        return [self._txns[t] for t in sorted(self._txns) if not wanted or self._txns[t].state in wanted]

    # -- the moves --

    def _add(
        self, tid: str, pid: int, epoch: int, partitions: frozenset[TopicPartition], groups: frozenset[str], now_ms: int
    ) -> TxnResult[TxnAnswer]:
        meta = self._txns.get(tid)
        call = "AddOffsetsToTxn" if groups else "AddPartitionsToTxn"
        refusal = _check_producer(tid, meta, pid, epoch, call)
        if refusal is not None:
            return TxnResult(refusal)
        assert meta is not None
        if not partitions:
            message = f"{_got(tid, call, pid, epoch)} names no partition; name the partitions to add"
            return TxnResult(TxnAnswer(ErrorCode.INVALID_REQUEST, message))
        if meta.state in PREPARING:
            return TxnResult(_concurrent(meta, _got(tid, call, pid, epoch)))
        if meta.state is TxnState.ONGOING:
            if partitions <= meta.partitions and groups <= meta.group_ids:
                return TxnResult(NONE)  # already added: nothing to write
            new = transition(
                meta,
                TxnState.ONGOING,
                partitions=meta.partitions | partitions,
                group_ids=meta.group_ids | groups,
                last_update_ms=now_ms,
            )
            return self._write(new, NONE)
        if epoch > MAX_TXN_EPOCH:
            message = (
                f"{_got(tid, call, pid, epoch)}: that is the id's current epoch, but it is exhausted (a"
                f" transaction needs an epoch <= {MAX_TXN_EPOCH} so that its end bump fits); call InitProducerId"
                " for a new producer id"
            )
            return TxnResult(TxnAnswer(ErrorCode.PRODUCER_FENCED, message))
        new = transition(
            meta,
            TxnState.ONGOING,
            partitions=partitions,
            group_ids=groups,
            start_time_ms=now_ms,
            last_update_ms=now_ms,
            ended_by="",
            transaction_version=TV2,
        )
        return self._write(new, NONE)

    def _end(
        self, meta: TransactionMetadata, *, commit: bool, ended_by: str, now_ms: int, answer: R, bump: bool = True
    ) -> TxnResult[R]:
        """Rule 2: Ongoing (pid, e) → Prepare* at (pid, e + 1), and the marker job that carries e + 1;
        without ``bump`` (a TV1 EndTxn), Prepare* at (pid, e) and a TV1 job that carries e."""
        prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        new = transition(
            meta,
            prepare,
            producer_epoch=meta.producer_epoch + 1 if bump else meta.producer_epoch,
            ended_by=ended_by,
            last_update_ms=now_ms,
            transaction_version=TV2 if bump else TV1,
        )
        self._txns[new.transactional_id] = new
        return TxnResult(answer, (new,), (marker_job(new),))

    def _write(self, new: TransactionMetadata, answer: R) -> TxnResult[R]:
        self._txns[new.transactional_id] = new
        return TxnResult(answer, (new,))


def _fresh(meta: TransactionMetadata, state: TxnState, **changes: object) -> TransactionMetadata:
    """``meta`` moved to ``state`` with no transaction open (Empty, Complete*); Complete* keeps who ended it."""
    complete = state in (TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
    return transition(
        meta,
        state,
        partitions=frozenset(),
        group_ids=frozenset(),
        start_time_ms=-1,
        ended_by=meta.ended_by if complete else "",
        transaction_version=meta.transaction_version if complete else TV2,
        **changes,
    )


def _check_producer(tid: str, meta: TransactionMetadata | None, pid: int, epoch: int, call: str) -> TxnAnswer | None:
    """Rule 6: None when (pid, epoch) is the id's current producer and epoch, else the refusal."""
    got = _got(tid, call, pid, epoch)
    if meta is None:
        message = f"{got}, but the id is unknown to this coordinator; call InitProducerId first"
        return TxnAnswer(ErrorCode.INVALID_PRODUCER_ID_MAPPING, message)
    current = f"the id's producer is {meta.producer_id} epoch {meta.producer_epoch}"
    if pid != meta.producer_id:
        message = f"{got}, but {current}; this producer session is over: call InitProducerId"
        return TxnAnswer(ErrorCode.INVALID_PRODUCER_ID_MAPPING, message)
    if epoch > meta.producer_epoch:
        message = f"{got}, but {current} and no higher epoch was handed out; call InitProducerId"
        return TxnAnswer(ErrorCode.INVALID_PRODUCER_EPOCH, message)
    if epoch < meta.producer_epoch:
        if meta.ended_by == "timeout" and epoch == meta.producer_epoch - 1:
            why = f"its transaction timed out after {meta.timeout_ms} ms and was aborted; call EndTxn(abort) to recover"
        else:
            why = "a newer InitProducerId or the end of its transaction fenced this epoch; close this producer"
        return TxnAnswer(ErrorCode.PRODUCER_FENCED, f"{got}, but {current}: {why}")
    return None


def _retry(meta: TransactionMetadata, epoch: int, commit: bool) -> TxnAnswer:
    """Rule 6: EndTxn(pid, e) while the id is Prepare*/Complete* at e + 1, the transaction (pid, e) having ended."""
    tid, pid, bumped = meta.transactional_id, meta.producer_id, meta.producer_epoch
    got = _got(tid, f"EndTxn({'commit' if commit else 'abort'})", pid, epoch)
    ended = "committed" if meta.commit else "aborted"
    if meta.ended_by == "fence":
        message = (
            f"{got}, but a newer InitProducerId fenced epoch {epoch} (now {bumped}) and aborted it; close this producer"
        )
        return TxnAnswer(ErrorCode.PRODUCER_FENCED, message)
    if commit == meta.commit:
        return TxnAnswer(ErrorCode.NONE, "", pid, bumped)  # the same EndTxn again: the same answer
    if meta.ended_by == "timeout":
        message = (
            f"{got}, but the transaction timed out after {meta.timeout_ms} ms and was aborted (epoch now {bumped});"
            " abort it with EndTxn(abort) and redo the work in a new transaction"
        )
    else:
        message = f"{got}, but the transaction was already {ended} (epoch now {bumped}); the outcome cannot change"
    return TxnAnswer(ErrorCode.INVALID_TXN_STATE, message)


def _concurrent(meta: TransactionMetadata, got: str) -> TxnAnswer:
    message = (
        f"{got}: that is the id's current epoch, but the previous transaction of producer {meta.producer_id} is"
        f" still writing its markers ({meta.state}); retry shortly"
    )
    return TxnAnswer(ErrorCode.CONCURRENT_TRANSACTIONS, message)


def _got(tid: str, call: str, pid: int, epoch: int) -> str:
    """The start of every refusal: the id, the call, and the producer id and epoch it carried."""
    return f"transactional id {tid!r}: {call} from producer {pid} epoch {epoch}"
