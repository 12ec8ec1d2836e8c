"""Follower fetch sessions (KIP-227): a follower names only what changed, the leader reads only what moved.

Without a session, every follower round names every partition the follower
has on that leader, and the leader reads them all (with 1,000 partitions,
most of a round's work was for partitions where nothing had happened).

Rules, on both sides of one session (one follower fetch loop, one leader):

- A follower opens a session with a full fetch (``session_epoch`` 0, every
  partition named). The leader keeps what each partition named (its fetch
  state: fetch offset, current leader epoch, last fetched epoch, the follower's
  high watermark) and answers with a session id. A leader keeps one session
  per follower broker; a new one replaces the old.
- The Nth fetch after that carries the session id and epoch N and names only
  the partitions whose fetch state changed since it last named them. A
  partition the fetch does not name counts as fetched again at the state it
  last named, as in Kafka: the leader records that fetch for the ISR and the
  high watermark (``Partition.on_follower_fetch`` at the named offset), so a
  caught-up follower stays caught up while it names nothing.
- The leader reads a partition only when something may have changed for the
  follower there: it was named, it was notified since the last fetch (an
  append, a high watermark move, a leadership change or deletion: the fetch
  purgatory's ``Watch``), or the last fetch answered it or left it out while
  the follower was behind (a full response or a throttle). Every other
  partition would read as "changes nothing" again and stays out of the answer.
- A fetch for a session the leader does not have (it restarted, or a newer
  session of that follower replaced it, or the follower broker restarted) is
  refused whole with FETCH_SESSION_ID_NOT_FOUND; one whose epoch is not the
  next is refused with INVALID_FETCH_SESSION_EPOCH. Either way no partition is
  read and nothing is recorded; the follower opens a new session at once.
- The follower forgets its session on any failed round (a transport error or
  timeout: the leader may or may not have taken that epoch), on a refusal,
  and when the set of partitions it follows on that leader changes; its next
  fetch is full. A leader that answers a full fetch without a session id
  keeps the follower on full fetches (no sessions there).

Consumers do not use sessions (every consumer fetch names its partitions).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from node.fetch_waiters import FetchWaiters, Watch

Key = tuple[str, int]
# What a follower names for a partition: fetch offset, current leader epoch, last fetched epoch, high watermark.
FetchState = tuple[int, int, int, int]
MAX_EPOCH = (1 << 31) - 1


def epoch_after(epoch: int) -> int:
    """The session epoch after ``epoch`` (it wraps to 1, as in Kafka)."""
    return 1 if epoch >= MAX_EPOCH else epoch + 1


@dataclass
class FetchSession:
    """The leader's side of one follower's session."""

    session_id: int
    replica_id: int
    replica_epoch: int
    watch: Watch
    next_epoch: int = 1
    items: dict[Key, pb.FetchPartition] = field(default_factory=dict)
    carried: set[Key] = field(default_factory=set)  # read again on the next fetch (answered, or behind)
    replaced: bool = False

    def begin(self, named: Iterable[pb.FetchPartition], waiters: FetchWaiters) -> tuple[list[Key], set[Key]]:
        """Take one fetch's named partitions into the session; return every key of the session,
        in order, and the ones to read (named, notified since the last fetch, or carried)."""
        to_read = cast(set[Key], self.watch.take()) | self.carried
        self.carried = set()
        new: list[Key] = []
        for item in named:
            key = (item.topic, item.partition)
            cached = self.items.get(key)
            if cached is None:
                cached = self.items[key] = pb.FetchPartition()
                new.append(key)
            cached.CopyFrom(item)
            to_read.add(key)
        if new:
            waiters.add(self.watch, new)
        return list(self.items), to_read


class FetchSessions:
    """The leader's sessions, one per follower broker."""

    session_class: type[FetchSession] = FetchSession  # the replication simulation puts a bug back through it

    def __init__(self, waiters: FetchWaiters) -> None:
        self._waiters = waiters
        self._by_replica: dict[int, FetchSession] = {}

    def __len__(self) -> int:
        return len(self._by_replica)

    def open(self, replica_id: int, replica_epoch: int) -> FetchSession:
        """A new session for ``replica_id``, replacing the one it had."""
        old = self._by_replica.pop(replica_id, None)
        if old is not None:
            old.replaced = True
            self._waiters.unwatch(old.watch)
        session_id = random.randrange(1, MAX_EPOCH)
        session = self.session_class(session_id, replica_id, replica_epoch, self._waiters.watch())
        self._by_replica[replica_id] = session
        return session

    def resume(self, replica_id: int, replica_epoch: int, session_id: int, epoch: int) -> FetchSession:
        """The session of an incremental fetch, moved on to its next epoch; or the typed refusal."""
        session = self._by_replica.get(replica_id)
        if session is None or session.session_id != session_id or session.replica_epoch != replica_epoch:
            raise KetchError(
                f"no fetch session {session_id} for broker {replica_id} (epoch {replica_epoch}) here: "
                "this node restarted or a newer session replaced it; open a new one with a full fetch",
                code=ErrorCode.FETCH_SESSION_ID_NOT_FOUND,
            )
        if epoch != session.next_epoch:
            raise KetchError(
                f"fetch session {session_id} expects epoch {session.next_epoch}, not {epoch}: "
                "open a new one with a full fetch",
                code=ErrorCode.INVALID_FETCH_SESSION_EPOCH,
            )
        session.next_epoch = epoch_after(epoch)
        return session


SESSION_REFUSALS = frozenset({ErrorCode.FETCH_SESSION_ID_NOT_FOUND, ErrorCode.INVALID_FETCH_SESSION_EPOCH})


@dataclass
class FollowerSession:
    """The follower's side: which epoch comes next and what the leader holds for each partition."""

    session_id: int = 0
    epoch: int = 0  # 0: no session open; the next fetch is full
    sent: dict[Key, FetchState] = field(default_factory=dict)

    def plan(self, states: dict[Key, FetchState]) -> tuple[int, list[Key]]:
        """The next fetch's session epoch and the partitions it names."""
        if self.epoch == 0 or states.keys() != self.sent.keys():
            self.epoch = 0
            return 0, list(states)
        sent = self.sent
        return self.epoch, [key for key, state in states.items() if sent[key] != state]

    def answered(self, states: dict[Key, FetchState], named: list[Key], response: pb.FetchResponse) -> bool:
        """Take the leader's answer to the fetch ``plan`` made; False if it refused the session."""
        if response.error_code in SESSION_REFUSALS:
            self.reset()
            return False
        if self.epoch == 0:
            if response.session_id:
                self.session_id, self.epoch, self.sent = response.session_id, 1, dict(states)
            return True
        self.epoch = epoch_after(self.epoch)
        for key in named:
            self.sent[key] = states[key]
        return True

    def reset(self) -> None:
        self.session_id, self.epoch, self.sent = 0, 0, {}
