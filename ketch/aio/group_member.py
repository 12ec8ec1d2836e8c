"""Consumer group membership: the client half of Kafka's classic group protocol.

Three parts (Kafka's ConsumerCoordinator over its AbstractCoordinator):
- group_rules.py, pure (no I/O, no clock): error classification, assignor
  selection, the JoinGroup metadata, the leader's assignment, what changes
  when an assignment arrives, topic matching.
- membership.py (``Membership``): the member id and generation, JoinGroup
  and SyncGroup, heartbeats, LeaveGroup, error codes turned into actions.
- here, ``GroupMember(Membership)``: what a consumer does with its
  membership, in the order the pure functions say. Committed offsets are
  group_offsets.py's requests. The consumer's fetcher (fetcher.py) owns the
  fetch positions; the member reaches them only through the ``Assignee`` hooks.

Rules:
- Join. Every configured assignor is offered, in preference order, with the
  member's subscription (assignors/protocol.py). The member's rebalance
  protocol is COOPERATIVE only when every configured assignor is cooperative,
  as in Kafka; else EAGER.
- Eager: before rejoining, every owned partition is revoked (committed first
  when auto-commit is on, then ``on_partitions_revoked``), so the member
  joins owning nothing. Cooperative (KIP-429): the member keeps consuming
  what it owns, sends it in the subscription, and after SyncGroup revokes
  only ``owned - assigned``; if that is not empty it rejoins at once.
- Leader. The member the JoinGroup response names leader decodes every
  member's subscription (a malformed one counts as subscribing to nothing),
  reads partition counts of the union of their topics from metadata, runs
  the selected assignor and sends every member's assignment in SyncGroup.
- Assignment. New partitions start from the group's committed offset
  (OffsetFetch), else from ``auto_offset_reset``; then
  ``on_partitions_assigned`` runs (it may seek).
- Poll boundaries (poll_boundary.py). A revoke and the application of a new
  assignment wait until the application is between batches, inside
  ``poll()``; meanwhile ``poll()`` returns nothing. An application that does
  not poll within ``max_poll_interval_ms`` holds the rebalance up to that
  long, then leaves.
- Rejoin (membership.py has the codes). When UNKNOWN_MEMBER_ID drops the
  member id, whatever the member owned is *lost* (``on_partitions_lost``,
  no commit: another member may own it already).
  A metadata refresh (every ``metadata_max_age_ms``, every second while a
  subscribed topic is missing) that changes the matched topics or a
  partition count also rejoins.
- Poll interval. If ``poll()`` is not called within ``max_poll_interval_ms``
  the member leaves the group (LeaveGroup), its partitions are lost, and it
  rejoins at the next poll (Kafka's behaviour).
- Commits. A member commits only partitions it owns (others raise
  ``CommitFailedError``), with its member id and generation; a commit the
  group fences (group_offsets.py) triggers a rejoin unless one already
  started since.
- Auto-commit commits the *consumed* offsets (the positions when ``poll()``
  was last entered: records returned before that call count as processed,
  as in Kafka where auto-commit runs inside poll) every
  ``auto_commit_interval_ms``, and before every revoke. ``close()`` commits
  the current positions (the application is done with what it polled).
- Fatal errors (e.g. INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT)
  stop the membership and are raised by the next ``poll()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ketch.aio.connection import Connection
from ketch.aio.group_offsets import GroupOffsets
from ketch.aio.membership import Membership
from ketch.aio.poll_boundary import PollBoundary, PollTimeout
from ketch.api.v1 import ketch_pb2
from ketch.assignors import ASSIGNORS, Assignor, RebalanceProtocol, decode_assignment
from ketch.errors import ErrorCode, KetchError
from ketch.group_rules import (
    Action,
    CommitFailedError,
    OffsetAndMetadata,
    action_for,
    apply_assignment,
    leader_assignments,
    malformed_members,
    match_topics,
    member_topics,
    partition_counts,
    rebalance_protocol,
    resolve_assignors,
    subscription_protocols,
)
from ketch.records import TopicPartition

# CommitFailedError, OffsetAndMetadata and resolve_assignors are group_rules.py's, re-exported here.
__all__ = ["Assignee", "CommitFailedError", "GroupMember", "OffsetAndMetadata", "resolve_assignors"]

log = logging.getLogger("ketch.consumer.group")


# -- the driver ------------------------------------------------------------------------------------


class Assignee(Protocol):
    """What the member needs from the consumer's fetcher: its fetch positions."""

    def add_partitions(self, committed: Mapping[TopicPartition, OffsetAndMetadata | None]) -> None: ...

    def remove_partitions(self, tps: Iterable[TopicPartition]) -> None: ...

    def current_positions(self) -> dict[TopicPartition, int]: ...


class GroupMember(Membership):
    """One consumer's membership in ``group_id`` (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        group_id: str,
        assignee: Assignee,
        *,
        assignors: Sequence[Assignor],
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 3000,
        max_poll_interval_ms: int = 300000,
        rebalance_timeout_ms: int | None = None,
        retry_backoff_ms: int = 100,
        request_timeout_ms: int = 30000,
        metadata_max_age_ms: int = 300000,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        client_id: str = "ketch-consumer",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            conn,
            group_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            rebalance_timeout_ms=rebalance_timeout_ms if rebalance_timeout_ms is not None else max_poll_interval_ms,
            retry_backoff_ms=retry_backoff_ms,
            request_timeout_ms=request_timeout_ms,
            client_id=client_id,
            clock=clock,
        )
        self.assignee = assignee
        self.assignors = list(assignors)
        self.protocol = rebalance_protocol(self.assignors)
        self.max_poll_interval = max_poll_interval_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.offsets = GroupOffsets(
            self.coordinators,
            group_id,
            generation=self._commit_generation,
            on_fenced=self._commit_fenced,
            request_timeout=self.request_timeout,
            backoff=self.backoff,
            clock=clock,
        )
        self.topics: frozenset[str] = frozenset()  # as subscribed (names), or empty with a pattern
        self.pattern: re.Pattern[str] | None = None
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.matched: frozenset[str] = frozenset()  # topics in the subscription sent at the last join
        self.joined_counts: dict[str, int] = {}
        self.error: KetchError | None = None
        self.consumed: dict[TopicPartition, int] = {}  # positions as of the latest poll
        self.last_poll = clock()
        self.rebalances = 0
        self._poll_expired = False
        self.boundary = PollBoundary()
        self._task: asyncio.Task[None] | None = None
        self._next_metadata = 0.0

    # -- control from the consumer --------------------------------------------------------
    @property
    def subscribed(self) -> bool:
        return bool(self.topics) or self.pattern is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"ketch-group-{self.group_id}")

    def subscribe(self, topics: Iterable[str], pattern: re.Pattern[str] | None, listener: Any) -> None:
        self.topics = frozenset(topics) if pattern is None else frozenset()
        self.pattern = pattern
        self.listener = listener
        self.error = None
        self._next_metadata = 0.0
        self.request_rejoin("subscription changed")

    def polled(self, positions: Mapping[TopicPartition, int]) -> None:
        """Called as ``poll()`` starts: everything returned before counts as consumed."""
        self.last_poll = self.clock()
        self.consumed = dict(positions)
        if self._poll_expired:
            self._poll_expired = False
            self.request_rejoin("poll() called again after max_poll_interval_ms")
        self.boundary.polling()

    def handed_out(self) -> None:
        """Called when ``poll()`` returns records: the application is busy with them until its next poll."""
        self.boundary.handed_out()

    async def settled(self) -> None:
        """Wait while a revoke or a new assignment waits for this poll or is being applied."""
        await self.boundary.settled()

    def raise_error(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    # -- the membership loop -----------------------------------------------------------------
    async def _run(self) -> None:
        next_commit = self.clock() + self.auto_commit_interval
        while True:
            try:
                now = self.clock()
                waits = [math.inf]
                if self.subscribed and self.error is None:
                    if (
                        not self._poll_expired
                        and self.generation >= 0
                        and now - self.last_poll > self.max_poll_interval
                    ):
                        await self._leave_after_poll_timeout()
                        continue
                    if now >= self._next_metadata:
                        await self._check_metadata()
                    waits.append(self._next_metadata - now)
                    if self.rejoin_reason is not None and not self._poll_expired:
                        await self._rebalance()
                        continue
                    if self.generation >= 0:
                        waits.append(self.last_poll + self.max_poll_interval - now)
                if self.auto_commit:
                    if now >= next_commit:
                        next_commit = now + self.auto_commit_interval
                        with contextlib.suppress(KetchError):
                            await self.commit_consumed(self.assigned)
                    waits.append(next_commit - now)
                self._wake.clear()
                wait = max(min(waits), 0.0)
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(None if math.isinf(wait) else wait):
                        await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except PollTimeout:
                await self._leave_after_poll_timeout()
            except KetchError as e:
                if action_for(e.code) is Action.FATAL:
                    log.error("group %s: %s; membership stopped", self.group_id, e)
                    self.error = e
                    self.topics, self.pattern = frozenset(), None
                else:
                    log.info("group %s: %s; retrying", self.group_id, e)
                    await asyncio.sleep(self.backoff)
            except Exception as e:  # a bug or a listener error: keep the member alive
                log.exception("group %s: membership step failed", self.group_id)
                self.error = KetchError(f"consumer group membership failed: {e!r}")
                await asyncio.sleep(self.backoff)

    async def _check_metadata(self) -> None:
        try:
            topics = await self._subscribed_topics()
            cluster = self.conn.cluster
        except KetchError:
            self._next_metadata = self.clock() + 1.0
            return
        counts = partition_counts(cluster, topics)
        missing = len(counts) < len(topics)
        self._next_metadata = self.clock() + (1.0 if missing else self.metadata_max_age)
        if self.generation >= 0 and (topics != self.matched or counts != self.joined_counts):
            self.request_rejoin(f"metadata changed: {self.joined_counts} -> {counts}")

    async def _subscribed_topics(self) -> frozenset[str]:
        if self.pattern is None:
            self.conn.track(self.topics)
            await self.conn.refresh()
            return self.topics
        response = await self.conn.call_any("Metadata", ketch_pb2.MetadataRequest())
        assert isinstance(response, ketch_pb2.MetadataResponse)
        matched = match_topics((), self.pattern, (t.name for t in response.topics if t.error_code == 0))
        self.conn.track(matched)
        if matched:
            await self.conn.refresh()
        return matched

    async def _rebalance(self) -> None:
        reason = self.rejoin_reason
        try:
            await self._join_and_sync()
        except BaseException:
            self.request_rejoin(reason or "retry")
            raise

    async def _await_app(self) -> None:
        await self.boundary.wait_for_app(lambda: self.last_poll + self.max_poll_interval - self.clock())

    async def _join_and_sync(self) -> None:
        if self._reset_pending:
            self._reset_pending = False
            await self._reset()
        if self.protocol is RebalanceProtocol.EAGER and self.assigned:
            await self._await_app()
            await self._revoke(set(self.assigned))
        addr = await self.coordinators.find(self.group_id, self.clock() + self.request_timeout)
        topics = await self._subscribed_topics()
        counts = partition_counts(self.conn.cluster, topics)
        reason, self.rejoin_reason = self.rejoin_reason, None
        log.info("group %s: joining (%s)", self.group_id, reason)
        protocols = subscription_protocols(self.assignors, topics, self.assigned, self.generation, self.protocol)
        join, sync = await self._join_sync(addr, protocols)
        if join is None or sync is None:
            return
        try:
            assigned = decode_assignment(bytes(sync.assignment)).partitions
        except ValueError:
            log.error("group %s: malformed assignment from the leader; rejoining", self.group_id)
            self.request_rejoin("malformed assignment")
            return
        self.matched, self.joined_counts = topics, counts
        self.rebalances += 1
        change = apply_assignment(self.assigned, assigned, self.protocol)
        log.info(
            "group %s: generation %d member %s: +%s -%s",
            self.group_id,
            self.generation,
            self.member_id,
            sorted(change.added),
            sorted(change.revoked),
        )
        self._start_heartbeats()
        if change.revoked or change.added:
            await self._await_app()
        if change.revoked:
            await self._revoke(set(change.revoked))
        with self.boundary.applying():
            if change.added:
                committed = await self.fetch_committed(change.added)
                self.assignee.add_partitions(committed)
                self.assigned |= change.added
            await self._notify(("on_partitions_assigned", "onPartitionsAssigned"), set(change.added))
        if change.rejoin:
            self.request_rejoin("revoked partitions (cooperative)")

    async def _assign(self, protocol: str, members: list[tuple[str, bytes]]) -> dict[str, bytes]:
        assignor = next((a for a in self.assignors if a.name == protocol), None) or ASSIGNORS.get(protocol)
        if assignor is None:
            raise KetchError(
                f"the group selected assignor {protocol!r}, unknown here", ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            )
        for member_id in malformed_members(members):
            log.warning("member %s sent a malformed subscription; it gets nothing", member_id)
        topics = member_topics(members)
        self.conn.track(topics)
        cluster = await self.conn.refresh() if topics else self.conn.cluster
        return leader_assignments(assignor, members, partition_counts(cluster, topics))

    async def _reset(self) -> None:
        """As ``Membership._reset``; whatever the member owned is lost."""
        await super()._reset()
        lost = set(self.assigned)
        if lost:
            self.assignee.remove_partitions(lost)
            self.assigned -= lost
            for tp in lost:
                self.offsets.last_committed.pop(tp, None)
            await self._notify(
                ("on_partitions_lost", "onPartitionsLost", "on_partitions_revoked", "onPartitionsRevoked"), lost
            )

    async def _revoke(self, tps: set[TopicPartition]) -> None:
        with self.boundary.applying():
            await self._revoke_now(tps)

    async def _revoke_now(self, tps: set[TopicPartition]) -> None:
        if self.auto_commit:
            try:
                await self.commit_consumed(tps)
            except KetchError as e:
                log.warning("group %s: commit before revoking failed: %s", self.group_id, e)
        await self._notify(("on_partitions_revoked", "onPartitionsRevoked"), set(tps))
        self.assignee.remove_partitions(tps)
        self.assigned -= tps
        for tp in tps:
            self.offsets.last_committed.pop(tp, None)
            self.consumed.pop(tp, None)

    async def _notify(self, names: tuple[str, ...], tps: set[TopicPartition]) -> None:
        """Call the listener's first method of ``names`` it has (the later ones are fallbacks)."""
        fn = next((f for name in names if callable(f := getattr(self.listener, name, None))), None)
        if fn is None:
            return
        try:
            result = fn(tps)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("group %s: rebalance listener %s failed", self.group_id, names[0])

    async def _leave_after_poll_timeout(self) -> None:
        log.warning(
            "group %s: poll() was not called within max_poll_interval_ms (%.0f s); leaving the group",
            self.group_id,
            self.max_poll_interval,
        )
        self._poll_expired = True
        await self.leave()
        await self._reset()

    # -- committed offsets ------------------------------------------------------------------
    async def commit_consumed(self, tps: Iterable[TopicPartition]) -> None:
        """Auto-commit: the consumed offsets of ``tps`` that moved since their last commit."""
        wanted = set(tps) & self.assigned if self.subscribed else set(tps)
        todo = {
            tp: OffsetAndMetadata(off)
            for tp, off in self.consumed.items()
            if tp in wanted and self.offsets.last_committed.get(tp) != off
        }
        if todo:
            await self.commit(todo)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], deadline: float | None = None) -> None:
        """OffsetCommit, retried across coordinator changes until ``deadline`` (default: request timeout)."""
        if not offsets:
            return
        todo = dict(offsets)
        if self.subscribed and not set(todo) <= self.assigned:
            stray = sorted(set(todo) - self.assigned)
            raise CommitFailedError(
                f"cannot commit {', '.join(f'{t}-{p}' for t, p in stray)}: not assigned to this member of group "
                f"{self.group_id!r} (revoked by a rebalance, or never assigned)",
                ErrorCode.ILLEGAL_GENERATION,
            )
        await self.offsets.commit(todo, deadline)

    def _commit_generation(self) -> tuple[str, int]:
        return (self.member_id, self.generation) if self.subscribed else ("", -1)

    def _commit_fenced(self, generation: int, code: ErrorCode) -> None:
        if self.subscribed and not self._rebalancing and generation == self.generation:
            self.request_rejoin(f"commit: {code.name}")

    async def fetch_committed(
        self, tps: Iterable[TopicPartition], deadline: float | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """OffsetFetch: the group's committed offset of each partition (None: none committed)."""
        return await self.offsets.fetch(tps, deadline)

    async def stop(self) -> None:
        for task in (self._task, self._hb_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._hb_task = None

    async def unsubscribe(self) -> None:
        """Revoke everything (committing first with auto-commit), leave, stop."""
        await self.stop()
        if self.assigned:
            await self._revoke(set(self.assigned))
        await self.leave()
        self.topics, self.pattern = frozenset(), None
        self.rejoin_reason = None

    async def close(self, final: Mapping[TopicPartition, int] | None) -> None:
        """Stop; commit the ``final`` positions (auto-commit); revoke; leave the group."""
        await self.stop()
        self.boundary.polling()
        if final and self.auto_commit:
            offsets = {
                tp: OffsetAndMetadata(off)
                for tp, off in final.items()
                if (tp in self.assigned or not self.subscribed) and self.offsets.last_committed.get(tp) != off
            }
            try:
                await self.commit(offsets)
            except KetchError as e:
                log.warning("group %s: commit on close failed: %s", self.group_id, e)
        if self.subscribed and self.assigned:
            revoked = set(self.assigned)
            await self._notify(("on_partitions_revoked", "onPartitionsRevoked"), revoked)
            self.assignee.remove_partitions(revoked)
            self.assigned.clear()
        await self.leave()
