"""Follower rules: what a follower does with the leader's fetch response (pure).

Kafka's pull model with leader epochs (KIP-101, KIP-279, KIP-320). A
follower fetches from its log end offset and sends the epoch of its last
batch (``last_fetched_epoch``). The leader compares that with its own
leader-epoch cache:

- if the follower's last epoch ends, on the leader, before the follower's
  log end (or the leader never had that epoch), the response carries a
  ``diverging_epoch`` (the largest leader epoch <= the follower's, and where
  it ends on the leader) and no records;
- otherwise it carries whole batches from the batch that holds the fetch
  offset, and the leader's high watermark.

Rules (``Partition.apply_fetch_answer`` applies them to one ``FetchAnswer``,
which the driver fills from the response, and says what it did in a
``FollowerUpdate``):
- Stale answer: it applies only while the replica still follows in the
  leader epoch the fetch was sent in and its log still ends at the fetch
  offset; otherwise nothing changes (the role moved while the fetch was out).
- Out of range below the leader's log start (the leader deleted what the
  follower needs): start an empty log at the leader's log start.
- Any other error (NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, ...)
  changes nothing: the metadata image will move the replica.
- Divergence: truncate to min(leader's end offset for that epoch, the
  follower's own end offset for that epoch). Never to the follower's high
  watermark — that could drop records the leader has committed but the
  follower's stale HW does not cover, or keep records past the divergence.
  A follower that holds no epoch <= the leader's answer (all its records come
  from epochs the leader never had, after an unclean or lossy election)
  truncates to where its first cached epoch starts. Repeated rounds
  converge: each one moves the follower to an older epoch.
- Records: batches wholly below the follower's log end are skipped; a batch
  that starts below it and ends at or above it means the follower's tail
  batch differs in shape from the leader's (after a truncation inside the
  leader's batch): the follower truncates to that batch's base and takes the
  leader's bytes — offsets below the divergence point hold the same records
  on both sides, so nothing committed is lost.
- Otherwise (records or none), the follower's high watermark is
  min(leader's high watermark, its own log end offset) and never moves
  backwards (``Partition.set_follower_high_watermark``).
- An answer with no records, no error and no divergence changes the follower only
  through that high watermark, so when min(leader's high watermark, fetch offset)
  is at or below the follower's own, it changes nothing (``changes_nothing``). A
  follower sends its high watermark with each partition, and the leader leaves
  such partitions out of its answer: a round over many idle partitions carries
  and applies only the ones that moved (what Kafka's incremental fetch sessions,
  KIP-227, save on the answer side, without session state on either side).
- Appends are not fsynced here: the fetch offset of the *next* fetch is the
  acknowledgement, so the driver syncs (one group commit per round, for
  ``flush.messages=1`` topics) before sending it. ``FollowerUpdate.appended``
  tells it to.
"""

from __future__ import annotations

from dataclasses import dataclass

from ketch import recordbatch


@dataclass(frozen=True, slots=True)
class FetchAnswer:
    """The leader's answer for one partition, with the position the fetch was sent from."""

    leader_epoch: int  # the request's: the epoch this replica followed when it fetched
    fetch_offset: int  # the request's: this replica's log end offset when it fetched
    error: int = 0  # an ErrorCode
    high_watermark: int = -1
    log_start_offset: int = 0
    records: bytes = b""
    diverging: tuple[int, int] | None = None  # the leader's (epoch, end offset) for that epoch


@dataclass(frozen=True, slots=True)
class FollowerUpdate:
    """What applying a ``FetchAnswer`` did."""

    changed: bool = False  # the log moved (reset, truncation or append): fetch again at once
    appended: bool = False  # batches were appended (the driver decides whether to fsync)
    note: str | None = None  # a reset or truncation, for the driver's log


def changes_nothing(
    records: bytes,
    diverging: tuple[int, int] | None,
    leader_high_watermark: int,
    fetch_offset: int,
    follower_high_watermark: int,
) -> bool:
    """Whether an error-free answer would leave a follower whose log ends at ``fetch_offset``
    and whose high watermark is ``follower_high_watermark`` exactly as it is."""
    return not records and diverging is None and min(leader_high_watermark, fetch_offset) <= follower_high_watermark


@dataclass(frozen=True)
class AppendPlan:
    truncate_to: int | None
    batches: list[bytes]
    next_offset: int


def divergence_truncation(
    leader_epoch: int,
    leader_end_offset: int,
    local_end_for_epoch: tuple[int, int],
    local_log_end: int,
    first_epoch_start: int | None = None,
) -> int:
    """Where a follower truncates on a diverging-epoch response.

    ``local_end_for_epoch`` is the follower's own ``end_offset_for_epoch(leader_epoch)``;
    ``first_epoch_start`` is where the follower's oldest cached epoch starts.
    """
    local_epoch, local_end = local_end_for_epoch
    if local_epoch == -1:
        # Every epoch the follower holds is newer than the leader's answer (after a lossy
        # or unclean election): nothing from its first epoch on can be trusted.
        start = local_log_end if first_epoch_start is None else first_epoch_start
        return min(leader_end_offset, start, local_log_end)
    if local_epoch == leader_epoch:
        return min(leader_end_offset, local_end, local_log_end)
    # The follower's largest epoch <= leader_epoch is older: it ends at local_end on
    # this side; the next round compares that epoch.
    return min(local_end, leader_end_offset, local_log_end)


def plan_append(records: bytes, local_log_end: int) -> AppendPlan:
    """Batches to append (and a truncation first, if needed) for leader ``records``."""
    batches: list[bytes] = []
    truncate_to: int | None = None
    next_offset = local_log_end
    at = 0
    for header in recordbatch.iter_headers(records):
        raw = records[at : at + header.size]
        at += header.size
        if header.last_offset < next_offset:
            continue  # already held
        if header.base_offset < next_offset:
            truncate_to = header.base_offset if truncate_to is None else min(truncate_to, header.base_offset)
        batches.append(raw)
        next_offset = header.next_offset
    return AppendPlan(truncate_to, batches, next_offset)
