"""Transactional offset commits (KIP-98 TxnOffsetCommit, with KIP-447's generation fencing).

A consume-transform-produce application commits its consumed offsets inside
its transaction: AddOffsetsToTxn adds the group's offsets partition to the
transaction, then TxnOffsetCommit(group, member, generation, producer id,
epoch, offsets) reaches the group coordinator. Rules:

- Fencing is OffsetCommit's (offsets.commit_error): a member of the current
  generation, or member "" with generation -1 while the group is Empty or
  unknown (a producer that does not use group membership). KIP-447: a zombie
  of an older generation gets ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID and its
  transaction must abort. Per-partition checks are OffsetCommit's too.
- Accepted offsets are PENDING for the producer id
  (``Group.pending_txn_offsets[pid]``, Kafka's
  ``pendingTransactionalOffsetCommits``): OffsetFetch never returns them. The
  records are the ordinary offset commit records, written as ONE
  transactional batch of that producer (``GroupResult.transactional =
  (pid, epoch)``): the marker that ends the transaction on this offsets
  partition decides them.
- ``complete(pid, commit)``, when the marker of pid was WRITTEN to this
  offsets partition (a duplicate or stale marker writes nothing and must not
  call it): commit makes every pending offset of pid the committed one, as if
  committed at the marker (the value keeps the commit time of its record);
  abort drops them. No records: the marker in the log is the record. (Kafka
  keeps a committed offset whose record is LATER in the log than the pending
  one; Ketch lets the transaction's win. Mixing simple and transactional
  commits of one partition within one transaction is not a pattern any
  client uses, and this rule is the same in live state and replay.)
- A later TxnOffsetCommit of the same producer for the same partition
  replaces its pending offset (last write wins, as in the log).
- OffsetFetch with ``require_stable`` (what a read_committed Kafka consumer
  sends; Ketch's service sets it whenever the request names its partitions)
  answers UNSTABLE_OFFSET_COMMIT (88, retriable) for a partition that has a
  pending transactional offset from any producer (offsets.fetch).
- A group with pending transactional offsets is never blank (never
  forgotten) and cannot be deleted (NON_EMPTY_GROUP): its transaction must
  end first.
- Replay (replay.py): records of a transactional batch of producer P are
  pending for P until P's control batch; a commit marker materializes them,
  an abort drops them, exactly as ``complete`` does. Replaying the log
  therefore gives the live state, pending offsets included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from coordinator.groups.offsets import apply_offset
from coordinator.groups.offsets import commit as offsets_commit
from coordinator.groups.records import CommittedOffset, GroupRecord, OffsetCommitKey
from coordinator.groups.results import CommitResponse, Effects, GroupConfig, OffsetCommit
from coordinator.groups.state import Group
from ketch.assignors.base import TopicPartition


def commit(
    group: Group,
    member_id: str,
    generation: int,
    producer_id: int,
    offsets: Mapping[TopicPartition, OffsetCommit],
    *,
    now_ms: int,
    timestamp_ms: int,
    config: GroupConfig,
    fx: Effects,
) -> CommitResponse:
    """OffsetCommit's checks (offsets.commit); each accepted offset is recorded and left pending for ``producer_id``."""

    def write_pending(group: Group, tp: TopicPartition, value: CommittedOffset, fx: Effects) -> None:
        fx.records.append(GroupRecord(OffsetCommitKey(group.group_id, tp.topic, tp.partition), value))
        apply_pending(group, producer_id, tp, value)

    return offsets_commit(
        group,
        member_id,
        generation,
        offsets,
        now_ms=now_ms,
        timestamp_ms=timestamp_ms,
        config=config,
        fx=fx,
        write=write_pending,
    )


def apply_pending(group: Group, producer_id: int, tp: TopicPartition, value: CommittedOffset) -> None:
    """The one place a pending transactional offset is recorded (commands and replay alike)."""
    group.pending_txn_offsets.setdefault(producer_id, {})[tp] = value


def complete(groups: Iterable[Group], producer_id: int, commit: bool) -> list[str]:
    """End ``producer_id``'s transaction in ``groups``; the ids of the groups it had offsets in."""
    ended = []
    for group in groups:
        pending = group.pending_txn_offsets.pop(producer_id, None)
        if pending is None:
            continue
        ended.append(group.group_id)
        if commit:
            for tp, value in sorted(pending.items()):
                apply_offset(group, tp, value)
    return ended
