"""When an acks=all append is done (pure; Kafka's ``DelayedProduce`` and
``Partition.checkEnoughReplicasReachOffset``).

A produce with acks=all was appended by the leader of ``leader_epoch`` up to
``last_offset``; the answer waits until ``acks_all_outcome`` returns one.
Rules, in this order:
- Done once this replica still leads ``leader_epoch`` and the high watermark
  has passed ``last_offset`` — with NOT_ENOUGH_REPLICAS_AFTER_APPEND if the
  ISR is then below ``min.insync.replicas`` (Kafka's rule: a high watermark
  reached by fewer replicas is no promise), else without error.
- NOT_LEADER_OR_FOLLOWER once this replica no longer leads that epoch
  (deposed, or re-elected in a later one): it never succeeds after a
  leadership change, since the new leader may not have the records.
- REQUEST_TIMED_OUT once the deadline has passed (or the waiting is over,
  e.g. the broker is stopping).
- Otherwise keep waiting (None): the caller looks again when the partition's
  log or high watermark moves, and at the deadline.

The asyncio purgatory (node/produce_purgatory.py) and the replication
simulation (tests/replication_sim.py) both ask this function.
"""

from __future__ import annotations

from dataclasses import dataclass

from ketch.errors import ErrorCode
from replication.partition import Partition


@dataclass(frozen=True, slots=True)
class AcksOutcome:
    """How an acks=all produce ends: ``error`` NONE is success."""

    error: ErrorCode
    message: str = ""


REPLICATED = AcksOutcome(ErrorCode.NONE)


def acks_all_outcome(
    part: Partition,
    leader_epoch: int,
    last_offset: int,
    min_insync_replicas: int,
    *,
    timed_out: bool,
    timeout_ms: int,
) -> AcksOutcome | None:
    """The outcome of an acks=all append, or None to keep waiting (see the module docstring).

    ``timeout_ms`` is the request's, for the message only."""
    where = f"{part.topic}-{part.index}"
    leads = part.is_leader and part.leader_epoch == leader_epoch
    if leads and part.high_watermark > last_offset:
        if part.isr_size < min_insync_replicas:
            return AcksOutcome(
                ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                f"{where}: offset {last_offset} is written but the ISR shrank to "
                f"{part.isr_size} replica(s), below min.insync.replicas={min_insync_replicas}",
            )
        return REPLICATED
    if not leads:
        return AcksOutcome(
            ErrorCode.NOT_LEADER_OR_FOLLOWER,
            f"{where}: leadership moved before offset {last_offset} was replicated; "
            "the write may or may not survive — retry at the new leader",
        )
    if timed_out:
        return AcksOutcome(
            ErrorCode.REQUEST_TIMED_OUT,
            f"{where}: offset {last_offset} not replicated to the ISR "
            f"{list(part.leader.isr) if part.leader else []} within {timeout_ms} ms",
        )
    return None
