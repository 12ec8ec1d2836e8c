"""Waiters: the futures callers of the Raft driver park on, and the rules that settle them.

Three kinds, all settled only by the driver's loop task (coordinator/raft_driver.py),
on the event loop, so no locking:

- Proposals, by log index, with the term they were proposed in. When the entry
  at that index is applied: the same term means it is ours (Raft's log matching:
  one leader per term, and a leader never overwrites its own entries), so the
  future gets the index; another term means ours was overwritten: ``NotLeader``.
  When this node stops leading, or its term moves on, every pending proposal gets
  ``NotLeader`` at once (its outcome is unknown; the caller retries at the leader).
- Reads, by ReadIndex context, with the (leader, term) this node knew when it
  asked: settled by the matching ``ReadState`` (with its index), or failed with
  ``NotLeader`` once this node's leader or term differs from that (the leader
  drops pending reads when it steps down, and a read forwarded to an old leader
  is answered in an old term, which the core ignores). Comparing with the core's
  current view, not a Ready's, never fails a read asked after the change.
- Applied-index waiters, in a heap by index: released once the state machine
  applied that far.

A future whose caller gave up (timeout, cancellation) is simply skipped: every
settle checks ``done()`` first, so no "exception never retrieved" is left behind
and no settle raises ``InvalidStateError``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from coordinator.raft import Entry, NotLeader, ReadState


class Waiters:
    def __init__(self) -> None:
        self._proposals: dict[int, tuple[int, asyncio.Future[int]]] = {}
        self._reads: dict[bytes, tuple[int, int, asyncio.Future[int]]] = {}
        self._applied: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    # -- proposals -----------------------------------------------------------------------

    def proposal(self, index: int, term: int, leader: int) -> asyncio.Future[int]:
        """A future for the entry just proposed at ``index`` in ``term``."""
        old = self._proposals.get(index)
        if old is not None:
            _fail(old[1], NotLeader(leader))
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._proposals[index] = (term, fut)
        return fut

    def forget_proposal(self, index: int, fut: asyncio.Future[int]) -> None:
        if self._proposals.get(index, (0, None))[1] is fut:
            del self._proposals[index]

    def entry_applied(self, entry: Entry, leader: int) -> None:
        p = self._proposals.pop(entry.index, None)
        if p is not None:
            if p[0] == entry.term:
                if not p[1].done():
                    p[1].set_result(entry.index)
            else:
                _fail(p[1], NotLeader(leader))

    def leadership(self, leading: bool, term: int, leader: int) -> None:
        """Fail the proposals this node can no longer see through (see module docstring)."""
        for index, (t, fut) in list(self._proposals.items()):
            if not leading or t != term:
                del self._proposals[index]
                _fail(fut, NotLeader(leader))

    # -- reads ---------------------------------------------------------------------------

    def read(self, context: bytes, leader: int, term: int) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[context] = (leader, term, fut)
        return fut

    def forget_read(self, context: bytes) -> None:
        self._reads.pop(context, None)

    def read_state(self, rs: ReadState) -> None:
        read = self._reads.get(rs.context)
        if read is not None and not read[2].done():
            read[2].set_result(rs.index)

    def reads_leader(self, leader: int, term: int) -> None:
        """Fail the reads asked under another leader or term (see module docstring)."""
        for read_leader, read_term, fut in self._reads.values():
            if (read_leader, read_term) != (leader, term):
                _fail(fut, NotLeader(leader))

    # -- applied index -------------------------------------------------------------------

    def applied(self, index: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied, (index, next(self._seq), fut))
        return fut

    def release_applied(self, applied: int) -> None:
        while self._applied and self._applied[0][0] <= applied:
            fut = heapq.heappop(self._applied)[2]
            if not fut.done():
                fut.set_result(None)

    # -- shutdown ------------------------------------------------------------------------

    def fail_all(self, exc: Exception) -> None:
        for _, _, read in self._reads.values():
            _fail(read, exc)
        for _, fut in self._proposals.values():
            _fail(fut, exc)
        for _, _, waiter in self._applied:
            _fail(waiter, exc)
        self._proposals.clear()
        self._applied.clear()


def _fail(fut: asyncio.Future[int] | asyncio.Future[None], exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)
