"""The transactional producer's state machine: Kafka's ``TransactionManager``, transactional half.

Pure: no clock, no I/O. The producer (ketch/aio/producer.py) asks this object
before every transactional call and reports every coordinator answer; the
sender asks it which partitions may be drained and which must be added to
the transaction first. The sequence bookkeeping is ketch/idempotence.py's;
this object only hands it the producer id and epoch the coordinator gave.

States (Kafka's names) and the calls that move them::

    UNINITIALIZED --begin_init--> INITIALIZING --init_completed--> READY
    READY --begin_transaction--> IN_TRANSACTION
    IN_TRANSACTION --begin_commit--> COMMITTING --end_completed--> READY
    IN_TRANSACTION | ABORTABLE_ERROR --begin_abort--> ABORTING --end_completed--> READY
    IN_TRANSACTION | COMMITTING --send_failed / coordinator_error--> ABORTABLE_ERROR
    any --fatal coordinator answer--> FATAL_ERROR (no way out)

Rules:
- Each user call is allowed only in the states above; in any other state it
  raises ``KetchError(INVALID_TXN_STATE)`` whose message says what to call
  instead. In ABORTABLE_ERROR every call but ``abort_transaction`` raises the
  error that made the transaction abortable (its message says to abort);
  in FATAL_ERROR every call raises the fatal error itself (e.g.
  ``PRODUCER_FENCED``: another producer with this transactional id started).
- ``init_transactions`` may be repeated while INITIALIZING (a timed-out
  attempt); ``commit_transaction`` while COMMITTING and ``abort_transaction``
  while ABORTING likewise: the retried EndTxn carries the same epoch, which
  the coordinator answers idempotently.
- Partitions: a batch to a partition is drained only when the partition was
  added to the current transaction (AddPartitionsToTxn answered NONE). A
  partition the sender wants to drain and that is not added becomes
  *pending*; all pending partitions go in one AddPartitionsToTxn
  (``partitions_to_add`` moves them to *adding*), and its answer adds them
  (``add_partitions_completed``) or puts them back (``add_partitions_retry``).
  Groups added with AddOffsetsToTxn are remembered the same way.
- The transaction has *started* once anything was (or may have been) added at
  the coordinator; a commit or abort of a transaction that never started
  sends no EndTxn and keeps the epoch (the coordinator has nothing to end).
- Every EndTxn answer names the producer id and epoch of the next
  transaction (KIP-890: each transaction ends with an epoch bump); the
  sequence bookkeeping is given them, so every partition restarts at
  sequence 0 under the new epoch, and the partition and group sets are
  cleared.
- Errors: PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING, and
  INVALID_PRODUCER_EPOCH from the coordinator are fatal: the producer is
  fenced; every later call raises ``KetchError(code=PRODUCER_FENCED)`` (or
  the fatal error itself). Any failed send inside a transaction, and
  any other non-retriable coordinator answer, make the transaction abortable:
  ``commit_transaction`` raises, ``abort_transaction`` works.

Invariant (tests/test_client_transactions.py): under any sequence of calls and
answers, a batch is only ever drainable in IN_TRANSACTION or COMMITTING for a
partition added in the current epoch, and after FATAL_ERROR nothing is.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum

from ketch.errors import ErrorCode, KetchError
from ketch.idempotence import NO_EPOCH, NO_PRODUCER_ID, IdempotentProducerState

__all__ = ["FATAL_COORDINATOR_ERRORS", "State", "TransactionManager"]

DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000

FATAL_COORDINATOR_ERRORS = frozenset(
    {ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.INVALID_PRODUCER_ID_MAPPING}
)


class State(Enum):
    UNINITIALIZED = "Uninitialized"
    INITIALIZING = "Initializing"
    READY = "Ready"
    IN_TRANSACTION = "InTransaction"
    COMMITTING = "CommittingTransaction"
    ABORTING = "AbortingTransaction"
    ABORTABLE_ERROR = "AbortableError"
    FATAL_ERROR = "FatalError"


_DRAINABLE = (State.IN_TRANSACTION, State.COMMITTING)


def _invalid(message: str) -> KetchError:
    return KetchError(message, code=ErrorCode.INVALID_TXN_STATE)


class TransactionManager:
    def __init__(
        self,
        transactional_id: str,
        idempotence: IdempotentProducerState,
        transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
    ) -> None:
        if not transactional_id:
            raise ValueError("transactional_id must be a non-empty string")
        if transaction_timeout_ms <= 0:
            raise ValueError(f"transaction_timeout_ms must be positive, not {transaction_timeout_ms}")
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.idempotence = idempotence
        self.state = State.UNINITIALIZED
        self.producer_id = NO_PRODUCER_ID
        self.epoch = NO_EPOCH
        self.last_error: KetchError | None = None
        self.partitions: set[Hashable] = set()  # added at the coordinator in this transaction
        self.pending: set[Hashable] = set()  # need AddPartitionsToTxn before their first batch
        self.adding: set[Hashable] = set()  # in the AddPartitionsToTxn being sent
        self.groups: set[str] = set()  # added with AddOffsetsToTxn in this transaction
        self._maybe_started = False  # an Add* was sent whose answer never came

    # -- checks ------------------------------------------------------------------

    def refusal(self, call: str) -> KetchError:
        """The error ``call`` raises in the current state (one place for every message)."""
        s = self.state
        if s is State.FATAL_ERROR:
            assert self.last_error is not None
            return self.last_error
        if s is State.ABORTABLE_ERROR:
            assert self.last_error is not None
            return KetchError(
                f"{call} is not possible: the transaction failed ({self.last_error}); call abort_transaction()",
                code=self.last_error.code,
            )
        hint = {
            State.UNINITIALIZED: "call init_transactions() first",
            State.INITIALIZING: "init_transactions() has not finished; call it again",
            State.READY: "no transaction is open; call begin_transaction() first",
            State.IN_TRANSACTION: "a transaction is open; call commit_transaction() or abort_transaction()",
            State.COMMITTING: "a commit is in progress; call commit_transaction() again to finish it",
            State.ABORTING: "an abort is in progress; call abort_transaction() again to finish it",
        }[s]
        return _invalid(f"{call} is not allowed in state {s.value}: {hint}")

    def _require(self, call: str, *allowed: State) -> None:
        if self.state not in allowed:
            raise self.refusal(call)

    @property
    def has_error(self) -> bool:
        return self.state in (State.ABORTABLE_ERROR, State.FATAL_ERROR)

    @property
    def is_fenced(self) -> bool:
        return self.state is State.FATAL_ERROR

    def dropped_batch_error(self) -> KetchError | None:
        """The error for queued batches when the transaction cannot go on (None: keep them)."""
        if self.state in (State.ABORTABLE_ERROR, State.FATAL_ERROR):
            return self.last_error
        if self.state is State.ABORTING:
            return _invalid("the transaction was aborted before the record was sent")
        return None

    def check_send(self) -> None:
        """May the user send a record now? Only inside a transaction."""
        self._require("send()", State.IN_TRANSACTION)

    # -- init_transactions --------------------------------------------------------

    def begin_init(self) -> None:
        self._require("init_transactions()", State.UNINITIALIZED, State.INITIALIZING)
        self.state = State.INITIALIZING

    def init_completed(self, producer_id: int, epoch: int) -> None:
        """InitProducerId answered NONE with this id and epoch."""
        self._require("init_completed", State.INITIALIZING)
        self._set_producer(producer_id, epoch)
        self.state = State.READY

    def _set_producer(self, producer_id: int, epoch: int) -> None:
        self.idempotence.set_producer(producer_id, epoch)  # validates; partitions restart at 0 once quiet
        self.producer_id, self.epoch = producer_id, epoch
        self.partitions.clear()
        self.pending.clear()
        self.adding.clear()
        self.groups.clear()
        self._maybe_started = False

    # -- the transaction ------------------------------------------------------------

    def begin_transaction(self) -> None:
        self._require("begin_transaction()", State.READY)
        self.state = State.IN_TRANSACTION

    def may_drain(self, tp: Hashable) -> bool:
        """May the sender drain a batch of ``tp`` now? If not added yet, ``tp`` becomes pending."""
        if self.state not in _DRAINABLE:
            return False
        if tp in self.partitions:
            return True
        if tp not in self.adding:
            self.pending.add(tp)
        return False

    def partitions_to_add(self) -> list[Hashable]:
        """The pending partitions, now *adding*: send them in one AddPartitionsToTxn. Empty: nothing to send."""
        if self.state not in _DRAINABLE or self.adding or not self.pending:
            return []
        self.adding, self.pending = self.pending, set()
        self._maybe_started = True
        return list(self.adding)

    def add_partitions_completed(self, tps: Iterable[Hashable]) -> None:
        tps = set(tps)
        self.adding -= tps
        if self.state in _DRAINABLE or self.state is State.ABORTABLE_ERROR:
            self.partitions |= tps

    def add_partitions_retry(self, tps: Iterable[Hashable]) -> None:
        """A retriable answer: the partitions are pending again (they go in the next AddPartitionsToTxn)."""
        tps = set(tps)
        self.adding -= tps
        if self.state in _DRAINABLE:
            self.pending |= tps

    def begin_add_offsets(self, group_id: str) -> None:
        self._require("send_offsets_to_transaction()", State.IN_TRANSACTION)
        self._maybe_started = True

    def add_offsets_completed(self, group_id: str) -> None:
        self.groups.add(group_id)

    @property
    def transaction_started(self) -> bool:
        return bool(self.partitions or self.groups or self.adding or self._maybe_started)

    def begin_commit(self) -> None:
        self._require("commit_transaction()", State.IN_TRANSACTION, State.COMMITTING)
        self.state = State.COMMITTING

    def begin_abort(self) -> None:
        self._require("abort_transaction()", State.IN_TRANSACTION, State.ABORTABLE_ERROR, State.ABORTING)
        self.state = State.ABORTING
        self.pending.clear()

    def end_completed(self, producer_id: int | None = None, epoch: int | None = None) -> None:
        """EndTxn answered NONE with the next transaction's id and epoch (None: no EndTxn was needed)."""
        self._require("end_completed", State.COMMITTING, State.ABORTING)
        if producer_id is None or epoch is None:
            producer_id, epoch = self.producer_id, self.epoch
        self._set_producer(producer_id, epoch)
        self.state = State.READY

    # -- errors ------------------------------------------------------------------------

    def send_failed(self, error: KetchError) -> None:
        """A batch of this transaction failed for good: the transaction can only be aborted."""
        if error.code is ErrorCode.PRODUCER_FENCED:
            self.fatal(error)
        elif self.state in _DRAINABLE:
            self.last_error = error
            self.state = State.ABORTABLE_ERROR

    def coordinator_error(self, error: KetchError) -> None:
        """A non-retriable answer of the transaction coordinator (or of the group coordinator for offsets)."""
        if error.code in FATAL_COORDINATOR_ERRORS:
            self.fatal(error)
        elif self.state in (*_DRAINABLE, State.ABORTABLE_ERROR):
            self.last_error = error
            self.state = State.ABORTABLE_ERROR
        elif self.state is State.INITIALIZING:
            self.fatal(error)

    def fatal(self, error: KetchError) -> None:
        if self.state is State.FATAL_ERROR:
            return
        if error.code in FATAL_COORDINATOR_ERRORS:
            error = KetchError(
                f"producer {self.producer_id} epoch {self.epoch} of transactional id {self.transactional_id!r} "
                f"was fenced by a newer producer with the same id ({error.message or error.code.name}); "
                "close this producer",
                code=ErrorCode.PRODUCER_FENCED,
            )
        self.last_error = error
        self.state = State.FATAL_ERROR
        self.pending.clear()
