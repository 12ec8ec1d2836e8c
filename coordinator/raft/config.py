"""Configuration, roles, errors and the deterministic PRNG of the Raft core.

Timing is in ticks: the driver calls ``RaftNode.tick()`` at a fixed interval (100 ms
is a sensible choice for the controller), so ``election_timeout_ticks=10`` is then one
second. The core never reads a clock.

Rules checked by ``Config``:
- ``voters`` are the bootstrap voters: the voter set until the log or a snapshot
  holds one (membership.py). ``id`` need not be among them: a controller added
  at runtime starts as an observer. Ids are positive (0 is ``NONE``) and distinct.
- ``directory`` is this replica's directory id ("" in tests that do not care:
  it matches anything); ``auto_join`` makes a replica that replaced an earlier one of its
  id (a wiped disk) ask to take its place among the voters (membership.py).
- ``heartbeat_ticks < election_timeout_ticks``: a follower must hear several heartbeats
  per election timeout, or it campaigns against a healthy leader.
- The randomized election timeout of a follower or candidate is drawn uniformly from
  ``[election_timeout_ticks, 2 * election_timeout_ticks)`` each time it resets, so
  split votes resolve quickly. The draw comes from ``SplitMix64`` seeded with
  ``seed`` and the node id: the same seed replays the same run exactly (the
  simulation relies on this); a production driver passes a fresh seed per start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from coordinator.raft.messages import NONE

_MASK = (1 << 64) - 1


class SplitMix64:
    """Sebastiano Vigna's splitmix64: tiny, fast, good enough for election jitter."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """A value in ``[0, n)`` (modulo bias is irrelevant for n << 2**64)."""
        return self.next() % n


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    voters: tuple[int, ...]
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_msg: int = 64
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    check_quorum_ticks: int = 0  # the leader's check-quorum window (leader.py); 0: election_timeout_ticks
    seed: int = 0
    directory: str = ""
    auto_join: bool = False

    def __post_init__(self) -> None:
        if self.id <= NONE:
            raise ValueError(f"node id must be positive, got {self.id}")
        if not self.voters or len(set(self.voters)) != len(self.voters) or min(self.voters) <= NONE:
            raise ValueError(f"voters must be distinct positive ids, got {self.voters}")
        if not 0 < self.heartbeat_ticks < self.election_timeout_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_timeout_ticks")
        if self.check_quorum_ticks and self.check_quorum_ticks < self.election_timeout_ticks:
            raise ValueError("check_quorum_ticks, when set, must be >= election_timeout_ticks")
        if self.max_entries_per_msg < 1 or self.max_inflight_msgs < 1:
            raise ValueError("max_entries_per_msg and max_inflight_msgs must be >= 1")


class RaftError(Exception):
    """Base of the errors the core raises for requests it cannot serve."""


class NotLeader(RaftError):
    """A proposal or read reached a node that is not the leader.

    ``leader`` is the leader this node knows of (``NONE`` if none): the driver
    redirects the client there, or retries later.
    """

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class TransferInProgress(RaftError):
    """The leader is handing leadership to ``transferee`` and refuses new proposals."""

    def __init__(self, transferee: int) -> None:
        super().__init__(f"leadership transfer to {transferee} in progress")
        self.transferee = transferee
