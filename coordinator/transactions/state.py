"""The state of one transactional id: ``TxnState``, the table of allowed moves, ``TransactionMetadata``.

States (Kafka's ``TransactionState``, without its epoch-fence and dead
states). The allowed moves are one table, ``VALID_PREVIOUS_STATES`` (for each
state, the states a transactional id may enter it from); every state change
goes through ``transition``, which raises ``IllegalTxnTransition`` for any
other move — a bug in the coordinator, never a client's error:

    to              from                                  when
    Empty           Empty, CompleteCommit, CompleteAbort  InitProducerId (epoch + 1, or a new producer id)
    Ongoing         Empty, CompleteCommit, CompleteAbort  the first AddPartitionsToTxn / AddOffsetsToTxn
                    Ongoing                               more partitions or groups added
    PrepareCommit   Ongoing                               EndTxn(commit)
    PrepareAbort    Ongoing                               EndTxn(abort), the transaction timeout, or a
                                                          fencing InitProducerId
    CompleteCommit  PrepareCommit                         every marker of the transaction was written
    CompleteAbort   PrepareAbort                          every marker of the transaction was written

An unknown id is created by InitProducerId in Empty (that is a new id, not a
move), and a coordinator that loads an id from ``__transaction_state`` builds
it in its loaded state.

``TransactionMetadata`` is the whole persisted state of an id (the
``__transaction_state`` record's value is exactly this), frozen: a call
builds a new value. Its ``producer_epoch`` is the coordinator's current epoch
for the id:

- Empty: the epoch InitProducerId handed out;
- Ongoing: the epoch of the open transaction — its data carries it;
- Prepare*/Complete*: the epoch of the transaction's markers, which is what
  the producer uses next: the BUMPED epoch E = e + 1 of the transaction
  (pid, e) that is ending/ended, except when a TV1 EndTxn ended it
  (``transaction_version`` 1, Kafka clients below EndTxn v5), which keeps e.
  So the ended transaction's epoch is ``ended_epoch`` (``producer_epoch - 1``,
  or ``producer_epoch`` for TV1), and ``ended_by`` says who ended it (rule 6
  needs both, nothing more): "client" (EndTxn), "timeout" (the transaction
  timeout) or "fence" (a newer InitProducerId for the id). ``ended_by`` is ""
  in Empty and Ongoing.

``transaction_version`` is Kafka's ``clientTransactionVersion`` of the
ending or ended transaction: 1 (TV1) only in Prepare*/Complete* ended by a
TV1 EndTxn ("client"); 2 (TV2, the epoch bumped) everywhere else, including
timeout and fencing aborts, which bump for either kind of client (as Kafka's
TV1 does). A record written before the field existed is TV2.

``partitions`` and ``group_ids`` are those of the open or ending transaction
(Ongoing, Prepare*); Empty and Complete* have none. ``start_time_ms`` is the
wall-clock time of the first Add of the open or ending transaction, -1 in
Empty and Complete*. ``last_update_ms`` is the time of the last call that
changed the id and carried a clock (every call but ``markers_written``).

Epochs are int16: an epoch a transaction may use is at most
``MAX_TXN_EPOCH`` (32766), so that its end bump (32767) still fits; an id
whose epoch has reached that limit gets a new producer id from its next
InitProducerId (Kafka's ``isProducerEpochExhausted``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from ketch.topic_partition import TopicPartition

TV1 = 1  # Kafka's transaction version 1: a client's EndTxn keeps the epoch
TV2 = 2  # KIP-890 part 2: every end bumps the epoch
MAX_EPOCH = 32767  # int16
MAX_TXN_EPOCH = MAX_EPOCH - 1  # the largest epoch whose end bump still fits in int16


class TxnState(StrEnum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"


ENDED = frozenset({TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT})  # no transaction open
PREPARING = frozenset({TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT})  # markers being written
ENDING = PREPARING | {TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT}  # a transaction ended: ``ended_by`` says how

VALID_PREVIOUS_STATES: Mapping[TxnState, frozenset[TxnState]] = {
    TxnState.EMPTY: ENDED,
    TxnState.ONGOING: ENDED | {TxnState.ONGOING},
    TxnState.PREPARE_COMMIT: frozenset({TxnState.ONGOING}),
    TxnState.PREPARE_ABORT: frozenset({TxnState.ONGOING}),
    TxnState.COMPLETE_COMMIT: frozenset({TxnState.PREPARE_COMMIT}),
    TxnState.COMPLETE_ABORT: frozenset({TxnState.PREPARE_ABORT}),
}

ENDED_BY = ("", "client", "timeout", "fence")


class IllegalTxnTransition(RuntimeError):
    """A move the state table forbids: the coordinator broke its own rules (Kafka's IllegalStateException)."""

    def __init__(self, transactional_id: str, current: TxnState, new: TxnState) -> None:
        allowed = ", ".join(sorted(VALID_PREVIOUS_STATES[new])) or "nothing"
        super().__init__(
            f"transactional id {transactional_id!r} cannot move from {current} to {new} (only from {allowed})"
        )


@dataclass(frozen=True)
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition] = frozenset()
    group_ids: frozenset[str] = frozenset()
    start_time_ms: int = -1
    last_update_ms: int = -1
    ended_by: str = ""  # one of ENDED_BY; "" unless Prepare*/Complete*
    transaction_version: int = TV2  # TV1 only when a TV1 EndTxn ended the transaction (no bump)

    def __post_init__(self) -> None:
        if self.ended_by not in ENDED_BY:
            raise ValueError(f"ended_by must be one of {ENDED_BY}, not {self.ended_by!r}")
        if self.transaction_version not in (TV1, TV2) or (
            self.transaction_version == TV1 and (self.ended_by != "client" or self.state not in ENDING)
        ):
            raise ValueError(
                f"transaction_version {self.transaction_version!r} does not fit state {self.state} ended by"
                f" {self.ended_by!r} (1 only after a client's EndTxn, else 2)"
            )

    @property
    def ended_epoch(self) -> int:
        """Prepare*/Complete*: the epoch of the transaction that is ending or ended."""
        return self.producer_epoch if self.transaction_version == TV1 else self.producer_epoch - 1

    @property
    def commit(self) -> bool:
        """Prepare*/Complete*: whether the ending or ended transaction commits."""
        return self.state in (TxnState.PREPARE_COMMIT, TxnState.COMPLETE_COMMIT)


def transition(meta: TransactionMetadata, new: TxnState, **changes: object) -> TransactionMetadata:
    """The one way an id changes state: a new value, or ``IllegalTxnTransition`` unless the table allows it."""
    if meta.state not in VALID_PREVIOUS_STATES[new]:
        raise IllegalTxnTransition(meta.transactional_id, meta.state, new)
    return replace(meta, state=new, **changes)  # type: ignore[arg-type]
