"""What transaction coordinator calls return: an answer, the records to persist, the marker jobs to run.

Driver order (DESIGN.md §2, as for groups): append ``encode_record`` of every
record to the id's ``__transaction_state`` partition as one batch (acks=all)
and wait until it is committed; then send ``response`` and start every marker
job. A result without records is sent once everything appended before it has
committed, so the state an answer claims is durable.

A ``MarkerJob`` is one WriteTxnMarkers job: write the marker (commit or
abort, epoch ``producer_epoch`` = the bumped epoch E, or for TV1 the
transaction's own epoch, and ``transaction_version``) to every partition in
``partitions``, retrying each until it answers NONE, then call
``markers_written(transactional_id, producer_id, producer_epoch)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from coordinator.transactions.state import TV2, TransactionMetadata
from ketch.errors import ErrorCode
from ketch.topic_partition import TopicPartition

R = TypeVar("R")


@dataclass(frozen=True)
class TxnConfig:
    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    default_timeout_ms: int = 60_000  # transaction.timeout.ms when InitProducerId carries none (0)


@dataclass(frozen=True)
class TxnAnswer:
    error_code: ErrorCode
    error_message: str
    producer_id: int = -1
    producer_epoch: int = -1


@dataclass(frozen=True)
class MarkerJob:
    transactional_id: str
    producer_id: int
    producer_epoch: int  # TV2: the bumped epoch E (ends epoch < E); TV1: the transaction's (ends epoch <= E)
    commit: bool
    partitions: tuple[TopicPartition, ...]  # sorted
    transaction_version: int = TV2  # which marker rule the partitions apply (replication/transactions.py)


@dataclass(frozen=True)
class TxnResult(Generic[R]):
    response: R
    records: tuple[TransactionMetadata, ...] = ()
    markers: tuple[MarkerJob, ...] = ()


NONE = TxnAnswer(ErrorCode.NONE, "")


def marker_job(meta: TransactionMetadata) -> MarkerJob:
    """The job that completes a Prepare* state (the same job after a failover: markers are idempotent)."""
    return MarkerJob(
        meta.transactional_id,
        meta.producer_id,
        meta.producer_epoch,
        meta.commit,
        tuple(sorted(meta.partitions)),
        meta.transaction_version,
    )
