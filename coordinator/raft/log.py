"""RaftLog: the in-memory Raft log of one node — snapshot offset, stable and unstable entries.

Layout (indexes are absolute)::

    snapshot.index = offset      stable                    last_index
          |  compacted  | entries known persisted | unstable tail |
                         ^ first_index = offset + 1

- ``snapshot`` is the newest snapshot this node has (made by ``compact`` or received
  from a leader); ``term(offset)`` is ``snapshot.term``; entries at or below the offset
  are gone and ``term()`` answers ``None`` for them.
- ``entries[k]`` has index ``offset + 1 + k``: the log is contiguous, there are no holes.
- ``stable`` is the highest index the driver has confirmed persisted (via ``advance``);
  everything above it is the unstable tail, handed to the driver in the next Ready.
  A conflicting append may overwrite persisted entries: ``stable`` then drops to just
  before the conflict, and the next Ready's entries start at the conflict index, which
  tells storage to delete its suffix from there.
- ``pending_snapshot`` is a snapshot received from a leader and not yet persisted; while
  it is set, the whole log is that snapshot plus whatever was appended after it.
- ``committed`` never decreases and never exceeds ``last_index``; ``applied`` never
  exceeds ``committed``. An append that would overwrite a committed entry is a safety
  violation and raises ``AssertionError`` (it can only happen if a peer lost persisted
  state or lied), rather than silently corrupting the state machine.

The whole uncompacted log lives in memory: the core never reads storage, which keeps it
pure. The driver's storage is a write-only mirror of it plus the source of the
``PersistedState`` a node restarts from, and the metadata state machine compacts the log
regularly (``RaftNode.compact``) so it stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.raft.messages import EMPTY_SNAPSHOT, Entry, Snapshot


class RaftLog:
    __slots__ = ("applied", "committed", "entries", "offset", "pending_snapshot", "snapshot", "stable")

    def __init__(self, snapshot: Snapshot = EMPTY_SNAPSHOT, entries: Sequence[Entry] = (), committed: int = 0) -> None:
        """A log restored from storage: everything given is, by definition, stable."""
        self.snapshot = snapshot
        self.offset = snapshot.index
        kept = [e for e in entries if e.index > self.offset]
        for k, e in enumerate(kept):
            if e.index != self.offset + 1 + k:
                raise ValueError(f"stored entries are not contiguous after snapshot {self.offset}: {e.index}")
        self.entries: list[Entry] = kept
        self.stable = self.last_index
        self.pending_snapshot: Snapshot | None = None
        self.committed = max(committed, self.offset)
        if self.committed > self.last_index:
            raise ValueError(f"stored commit {committed} is beyond the stored log's last index {self.last_index}")
        self.applied = self.offset

    # -- reading -------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.offset + 1

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` if compacted away or beyond the end."""
        k = index - self.offset
        if k == 0:
            return self.snapshot.term
        if 0 < k <= len(self.entries):
            return self.entries[k - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log at least as up to date as ours gets our vote."""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with ``lo <= index < hi``; ``lo`` must not be compacted."""
        if lo <= self.offset:
            raise IndexError(f"entry {lo} is compacted (snapshot index {self.offset})")
        return tuple(self.entries[lo - self.offset - 1 : hi - self.offset - 1])

    def unstable_entries(self) -> tuple[Entry, ...]:
        return tuple(self.entries[self.stable - self.offset :])

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry that is missing or has another term here; 0 if none."""
        for e in entries:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``i <= index`` whose term is <= ``term``, with that term.

        Used both by a follower building its reject hint and by the leader reading
        one: all entries in ``(i, index]`` have a larger term than ``term``, so none
        of them can match and the next probe may skip them all. A compacted index
        answers term 0 (unknown) and stops the search there.
        """
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- writing -------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, first truncating any suffix from ``entries[0].index`` on."""
        if not entries:
            return
        after = entries[0].index
        if after <= self.committed:
            raise AssertionError(f"overwriting committed entry {after} (committed {self.committed})")
        if after > self.last_index + 1:
            raise AssertionError(f"append at {after} leaves a hole after {self.last_index}")
        del self.entries[after - self.offset - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, after - 1)

    def maybe_append(self, index: int, log_term: int, commit: int, entries: Sequence[Entry]) -> int | None:
        """A follower's APP: append if our log matches at ``(index, log_term)``.

        Returns the last index known to match the leader (``index + len(entries)``),
        or ``None`` when the log does not match there. Entries already present with
        the same term are left alone, so a duplicated or reordered APP never
        truncates anything; only a genuine conflict overwrites the suffix.
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index:
                raise AssertionError(f"commit {index} is beyond the last index {self.last_index}")
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to ``(index, term)``; ignored if since overwritten."""
        if index > self.stable and self.term(index) == term:
            self.stable = index

    def stable_snapshot_to(self, index: int) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot.index == index:
            self.pending_snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a leader's snapshot (which is ahead of our commit)."""
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.offset = snapshot.index
        self.entries = []
        self.stable = snapshot.index
        self.committed = snapshot.index

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to ``snapshot.index``, which the state machine has applied."""
        index = snapshot.index
        if not self.offset < index <= min(self.applied, self.stable):
            raise ValueError(f"compact index {index} must be in ({self.offset}, applied={self.applied}]")
        del self.entries[: index - self.offset]
        self.offset = index
        self.snapshot = snapshot
