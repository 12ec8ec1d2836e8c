"""Progress: what a leader knows about one follower's log, and the flow control it drives.

Each follower is in one of three states (etcd-io/raft's tracker, simplified):

- PROBE: the leader does not know where the follower's log diverges. It sends one
  APP at ``next - 1`` and then pauses until an answer (or a heartbeat response)
  arrives; a rejection moves ``next`` back using the follower's hint, skipping a whole
  divergent term at a time. A new leader starts every follower here, at its own
  ``last_index + 1`` (optimistic: a healthy follower matches at once).
- REPLICATE: the follower matched; the leader streams entries optimistically,
  advancing ``next`` as it sends (pipelining), with at most ``max_inflight`` APPs
  unacknowledged. A rejection means a message was lost or the follower restarted,
  so the follower drops back to PROBE from ``match + 1``.
- SNAPSHOT: the follower needs entries the leader has compacted; the leader sent its
  snapshot in one SNAP message and sends nothing else until the follower's reply
  shows it caught up (then REPLICATE), or until ``snapshot_ticks`` reaches the
  election timeout (the SNAP was probably lost: back to PROBE, which resends it).

Invariants: ``match < next``; ``match`` never decreases within a term (a stale
response is ignored); ``inflight`` holds the last index of each unacknowledged APP in
increasing order and is empty outside REPLICATE. ``recent_active`` is set by any
response and cleared by each check-quorum round. ``directory`` is the directory
id of the replica this progress describes ("" until heard); ``wants_join`` is
set by an OBSERVE that asks to join the voters (membership.py). ``sent_commit`` is the highest commit
index sent to the follower, so a follower that acknowledges after the commit moved
(and would otherwise wait for the next heartbeat) is told at once.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "directory",
        "inflight",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "snapshot_index",
        "snapshot_ticks",
        "state",
        "wants_join",
    )

    def __init__(self, next_index: int, max_inflight: int, directory: str = "") -> None:
        self.directory = directory
        self.wants_join = False
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.snapshot_index = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.sent_commit = 0
        self.max_inflight = max_inflight
        self.inflight: deque[int] = deque()

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.snapshot_index = 0
        self.snapshot_ticks = 0
        self.inflight.clear()

    def become_probe(self) -> None:
        after_snapshot = self.snapshot_index if self.state == ProgressState.SNAPSHOT else 0
        self._reset(ProgressState.PROBE)
        self.next = max(self.match, after_snapshot) + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot_index = index

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, last: int, count: int) -> None:
        """An APP carrying ``count`` entries ending at ``last`` went out."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last + 1
                self.inflight.append(last)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower holds everything up to ``index``; False if that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """The follower rejected an APP at ``rejected``; False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def free_acknowledged(self, index: int) -> None:
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()

    def free_first(self) -> None:
        if self.inflight:
            self.inflight.popleft()
