"""Consumer group membership: the client half of Kafka's classic group protocol.

The pure half lives in group_rules.py (no I/O, no clock): error
classification, assignor selection, the JoinGroup metadata, the leader's
assignment, what changes when an assignment arrives, topic matching.
``GroupMember`` here is the asyncio driver that does the calls in the order
those functions say. The consumer (consumer.py) owns the fetch
positions; the member reaches them only through the ``Assignee`` hooks.

Rules:
- Coordinator. FindCoordinator on any broker names the coordinator; every
  other group call goes there. NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
  COORDINATOR_LOAD_IN_PROGRESS and transport failures forget it: look it up
  again after ``retry_backoff_ms`` and retry (``Action.FIND_COORDINATOR``).
- Join. A new member joins with member id "" and keeps the id the response
  gives. Every configured assignor is offered, in preference order, with the
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
- Poll boundaries. The protocol runs in the background, but a revoke and the
  application of a new assignment wait until the application is between
  batches: inside ``poll()`` (or before its first records), as in Kafka where
  they run inside poll. While they run, ``poll()`` returns nothing. So records
  the application holds always belong to partitions it still owns, and a
  partition is never reassigned (to this member or another) under a batch
  still being processed. An application that does not poll within
  ``max_poll_interval_ms`` holds the rebalance up to that long, then leaves.
- Rejoin. REBALANCE_IN_PROGRESS and ILLEGAL_GENERATION (from Heartbeat,
  JoinGroup, SyncGroup) rejoin keeping the member id; UNKNOWN_MEMBER_ID drops
  the member id and generation, and whatever the member owned is *lost*
  (``on_partitions_lost``, no commit: another member may own it already).
  A metadata refresh (every ``metadata_max_age_ms``, every second while a
  subscribed topic is missing) that changes the matched topics or a
  partition count also rejoins.
- Heartbeats go every ``heartbeat_interval_ms`` from their own task while
  the member has a generation and is not rebalancing.
- Poll interval. If ``poll()`` is not called within ``max_poll_interval_ms``
  the member leaves the group (LeaveGroup), its partitions are lost, and it
  rejoins at the next poll (Kafka's behaviour).
- Commits. A member commits with its member id and generation, and only
  partitions it owns (others raise ``CommitFailedError``); a consumer
  that uses ``assign()`` with a group id commits with member "" and
  generation -1. ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or
  REBALANCE_IN_PROGRESS on a commit raise ``CommitFailedError`` (the
  partitions may belong to another member now) and trigger a rejoin;
  coordinator errors are retried until ``request_timeout_ms``.
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

import grpc

from ketch.aio.connection import Connection, translate_rpc_error
from ketch.api.v1 import ketch_pb2
from ketch.assignors import (
    ASSIGNORS,
    PROTOCOL_TYPE,
    Assignor,
    RebalanceProtocol,
    decode_assignment,
)
from ketch.errors import ErrorCode, KetchConnectionError, KetchError, error_for
from ketch.records import TopicPartition

__all__ = [
    "Action",
    "Assignee",
    "AssignmentChange",
    "CommitFailedError",
    "ConsumerRebalanceListener",
    "GroupMember",
    "OffsetAndMetadata",
    "action_for",
    "apply_assignment",
    "leader_assignments",
    "match_topics",
    "normalize_offsets",
    "partition_counts",
    "rebalance_protocol",
    "resolve_assignors",
    "subscription_protocols",
]

from ketch.aio.group_rules import (
    Action,
    AssignmentChange,
    CommitFailedError,
    ConsumerRebalanceListener,
    OffsetAndMetadata,
    action_for,
    apply_assignment,
    leader_assignments,
    match_topics,
    member_topics,
    normalize_offsets,
    partition_counts,
    rebalance_protocol,
    resolve_assignors,
    subscription_protocols,
)

log = logging.getLogger("ketch.consumer.group")


class _PollTimeout(Exception):
    """The application did not poll within max_poll_interval_ms."""


# -- the driver ------------------------------------------------------------------------------------


class Assignee(Protocol):
    """What the member needs from the consumer: its fetch positions."""

    def add_partitions(self, committed: Mapping[TopicPartition, OffsetAndMetadata | None]) -> None: ...

    def remove_partitions(self, tps: Iterable[TopicPartition]) -> None: ...

    def current_positions(self) -> dict[TopicPartition, int]: ...


def _listener_call(listener: Any, names: tuple[str, ...]) -> Callable[..., Any] | None:
    for name in names:
        fn = getattr(listener, name, None)
        if callable(fn):
            return fn
    return None


class GroupMember:
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
        if not group_id:
            raise ValueError("group_id must be a non-empty string")
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        self.conn = conn
        self.group_id = group_id
        self.assignee = assignee
        self.assignors = list(assignors)
        self.protocol = rebalance_protocol(self.assignors)
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.max_poll_interval = max_poll_interval_ms / 1000
        self.rebalance_timeout_ms = rebalance_timeout_ms if rebalance_timeout_ms is not None else max_poll_interval_ms
        self.backoff = retry_backoff_ms / 1000
        self.request_timeout = request_timeout_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.client_id = client_id
        self.clock = clock
        # membership
        self.member_id = ""
        self.generation = -1
        self.leader = ""
        self.selected = ""
        self.topics: frozenset[str] = frozenset()  # as subscribed (names), or empty with a pattern
        self.pattern: re.Pattern[str] | None = None
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.matched: frozenset[str] = frozenset()  # topics in the subscription sent at the last join
        self.joined_counts: dict[str, int] = {}
        self.rejoin_reason: str | None = None
        self.error: KetchError | None = None
        # consumed positions (as of the latest poll) and what was last committed
        self.consumed: dict[TopicPartition, int] = {}
        self.last_committed: dict[TopicPartition, int] = {}
        self.last_poll = clock()
        self.rebalances = 0
        self._coordinator: tuple[int, tuple[str, int]] | None = None
        self._rebalancing = False
        self._poll_expired = False
        self._reset_pending = False
        self._app_idle = asyncio.Event()  # the application holds no records (it is inside poll)
        self._app_idle.set()
        self._settled = asyncio.Event()  # no revoke or assignment is being applied
        self._settled.set()
        self._wants_app = False  # a revoke or an assignment waits for the next poll()
        self._wake = asyncio.Event()
        self._polled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hb_task: asyncio.Task[None] | None = None
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

    def request_rejoin(self, reason: str) -> None:
        if self.rejoin_reason is None:
            self.rejoin_reason = reason
        self._wake.set()

    def polled(self, positions: Mapping[TopicPartition, int]) -> None:
        """Called as ``poll()`` starts: everything returned before counts as consumed."""
        self.last_poll = self.clock()
        self.consumed = dict(positions)
        if self._poll_expired:
            self._poll_expired = False
            self.request_rejoin("poll() called again after max_poll_interval_ms")
        self._polled.set()
        self._app_idle.set()

    def handed_out(self) -> None:
        """Called when ``poll()`` returns records: the application is busy with them until its next poll."""
        self._app_idle.clear()

    async def settled(self) -> None:
        """Wait while a revoke or a new assignment waits for this poll or is being applied."""
        while True:
            if self._wants_app:  # the member was woken by this poll: let it take its turn first
                await asyncio.sleep(0)
            elif self._settled.is_set():
                return
            else:
                await self._settled.wait()

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
            except _PollTimeout:
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
        """Wait until the application is between batches (see "Poll boundaries")."""
        try:
            while not self._app_idle.is_set():
                remaining = self.last_poll + self.max_poll_interval - self.clock()
                if remaining <= 0:
                    raise _PollTimeout()
                self._wants_app = True
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._app_idle.wait()
        finally:
            self._wants_app = False

    async def _join_and_sync(self) -> None:
        if self._reset_pending:
            self._reset_pending = False
            await self._lose_all()
        if self.protocol is RebalanceProtocol.EAGER and self.assigned:
            await self._await_app()
            await self._revoke(set(self.assigned))
        stub = await self._coordinator_stub(self.clock() + self.request_timeout)
        topics = await self._subscribed_topics()
        counts = partition_counts(self.conn.cluster, topics)
        reason, self.rejoin_reason = self.rejoin_reason, None
        log.info("group %s: joining (%s)", self.group_id, reason)
        protocols = subscription_protocols(self.assignors, topics, self.assigned, self.generation, self.protocol)
        self._rebalancing = True  # no heartbeats from here to the SyncGroup answer
        try:
            join, sync = await self._join_sync(stub, protocols)
        finally:
            self._rebalancing = False
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
        self._settled.clear()
        try:
            if change.added:
                committed = await self.fetch_committed(change.added)
                self.assignee.add_partitions(committed)
                self.assigned |= change.added
            await self._notify(("on_partitions_assigned", "onPartitionsAssigned"), set(change.added))
        finally:
            self._settled.set()
        if change.rejoin:
            self.request_rejoin("revoked partitions (cooperative)")

    async def _join_sync(self, stub: Any, protocols: list[tuple[str, bytes]]) -> tuple[Any, Any]:
        """JoinGroup, the leader's assignment, SyncGroup: both answers, or Nones when the rebalance must restart."""
        join = await self._call(
            stub,
            "JoinGroup",
            ketch_pb2.JoinGroupRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                protocol_type=PROTOCOL_TYPE,
                protocols=[ketch_pb2.GroupProtocol(name=n, metadata=m) for n, m in protocols],
                session_timeout_ms=self.session_timeout_ms,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
                client_id=self.client_id,
            ),
            self.rebalance_timeout_ms / 1000 + 5,
        )
        if not await self._group_error(join.status, "JoinGroup"):
            return None, None
        self.member_id, self.generation = join.member_id, join.generation
        self.leader, self.selected = join.leader, join.protocol
        assignments: dict[str, bytes] = {}
        if join.leader == join.member_id:
            members = [(m.member_id, bytes(m.metadata)) for m in join.members]
            assignments = await self._leader_assign(join.protocol, members)
        sync = await self._call(
            stub,
            "SyncGroup",
            ketch_pb2.SyncGroupRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                generation=self.generation,
                assignments=assignments,
            ),
            self.rebalance_timeout_ms / 1000 + 5,
        )
        if not await self._group_error(sync.status, "SyncGroup"):
            return None, None
        return join, sync

    async def _leader_assign(self, protocol: str, members: list[tuple[str, bytes]]) -> dict[str, bytes]:
        assignor = next((a for a in self.assignors if a.name == protocol), None) or ASSIGNORS.get(protocol)
        if assignor is None:
            raise KetchError(
                f"the group selected assignor {protocol!r}, unknown here", ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            )
        topics = member_topics(members)
        self.conn.track(topics)
        cluster = await self.conn.refresh() if topics else self.conn.cluster
        return leader_assignments(assignor, members, partition_counts(cluster, topics))

    async def _group_error(self, status: ketch_pb2.GroupStatus, what: str) -> bool:
        """Act on a JoinGroup/SyncGroup status; False when the rebalance must start over."""
        action = action_for(status.error_code)
        if action is Action.OK:
            return True
        err = error_for(status.error_code, status.error_message)
        log.info("group %s: %s: %s", self.group_id, what, err)
        if action is Action.FATAL:
            raise err
        if action is Action.RESET_MEMBER:
            await self._lose_all()
        if action is Action.FIND_COORDINATOR:
            self._coordinator = None
        self.request_rejoin(f"{what}: {err.code.name}")
        if action is not Action.REJOIN:
            await asyncio.sleep(self.backoff)
        return False

    async def _lose_all(self) -> None:
        self.member_id, self.generation = "", -1
        self._stop_heartbeats()
        lost = set(self.assigned)
        if lost:
            self.assignee.remove_partitions(lost)
            self.assigned -= lost
            for tp in lost:
                self.last_committed.pop(tp, None)
            await self._notify(
                ("on_partitions_lost", "onPartitionsLost", "on_partitions_revoked", "onPartitionsRevoked"), lost
            )

    async def _revoke(self, tps: set[TopicPartition]) -> None:
        self._settled.clear()
        try:
            await self._revoke_now(tps)
        finally:
            self._settled.set()

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
            self.last_committed.pop(tp, None)
            self.consumed.pop(tp, None)

    async def _notify(self, names: tuple[str, ...], tps: set[TopicPartition]) -> None:
        fn = _listener_call(self.listener, names) if self.listener is not None else None
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
        self._polled.clear()
        await self.leave()
        await self._lose_all()

    # -- heartbeats ---------------------------------------------------------------------------
    def _start_heartbeats(self) -> None:
        if self._hb_task is None or self._hb_task.done():
            self._hb_task = asyncio.create_task(self._heartbeats(), name=f"ketch-heartbeat-{self.group_id}")

    def _stop_heartbeats(self) -> None:
        if self._hb_task is not None and self._hb_task is not asyncio.current_task():
            self._hb_task.cancel()
        self._hb_task = None

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self._rebalancing or self.generation < 0 or not self.member_id:
                continue
            try:
                stub = await self._coordinator_stub(self.clock() + self.heartbeat_interval)
                response = await self._call(
                    stub,
                    "Heartbeat",
                    ketch_pb2.HeartbeatRequest(
                        group_id=self.group_id, member_id=self.member_id, generation=self.generation
                    ),
                    self.request_timeout,
                )
            except KetchError as e:
                log.info("group %s: heartbeat failed: %s", self.group_id, e)
                continue
            if self._rebalancing:
                continue
            action = action_for(response.status.error_code)
            if action is Action.OK:
                continue
            if action is Action.FIND_COORDINATOR:
                self._coordinator = None
            elif action is Action.RESET_MEMBER:
                self._reset_pending = True  # the member loop drops the partitions as lost, then rejoins
                self.request_rejoin("heartbeat: UNKNOWN_MEMBER_ID")
            elif action is Action.REJOIN:
                self.request_rejoin(f"heartbeat: {ErrorCode(response.status.error_code).name}")

    # -- coordinator calls ------------------------------------------------------------------
    async def _coordinator_stub(self, deadline: float) -> Any:
        while self._coordinator is None:
            try:
                response = await self.conn.call_any(
                    "FindCoordinator", ketch_pb2.FindCoordinatorRequest(group_id=self.group_id)
                )
                assert isinstance(response, ketch_pb2.FindCoordinatorResponse)
                code = response.status.error_code
                if code == ErrorCode.NONE:
                    self._coordinator = (response.node_id, (response.host, response.port))
                    break
                err = error_for(code, response.status.error_message)
            except KetchError as e:
                err = e
            if not err.retriable and action_for(err.code) is Action.FATAL:
                raise err
            if self.clock() + self.backoff > deadline:
                raise err
            await asyncio.sleep(self.backoff)
        return self.conn.stub_at(self._coordinator[1])

    async def _call(self, stub: Any, method: str, request: Any, timeout: float) -> Any:
        try:
            return await getattr(stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            self._coordinator = None
            raise translate_rpc_error(e, f"group coordinator ({method})") from None

    async def commit_consumed(self, tps: Iterable[TopicPartition]) -> None:
        """Auto-commit: the consumed offsets of ``tps`` that moved since their last commit."""
        wanted = set(tps) & self.assigned if self.subscribed else set(tps)
        todo = {
            tp: OffsetAndMetadata(off)
            for tp, off in self.consumed.items()
            if tp in wanted and self.last_committed.get(tp) != off
        }
        if todo:
            await self.commit(todo)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], deadline: float | None = None) -> None:
        """OffsetCommit, retried across coordinator changes until ``deadline`` (default: request timeout)."""
        if not offsets:
            return
        deadline = deadline if deadline is not None else self.clock() + self.request_timeout
        todo = dict(offsets)
        if self.subscribed and not set(todo) <= self.assigned:
            stray = sorted(set(todo) - self.assigned)
            raise CommitFailedError(
                f"cannot commit {', '.join(f'{t}-{p}' for t, p in stray)}: not assigned to this member of group "
                f"{self.group_id!r} (revoked by a rebalance, or never assigned)",
                ErrorCode.ILLEGAL_GENERATION,
            )
        while True:
            member_id, generation = (self.member_id, self.generation) if self.subscribed else ("", -1)
            err: KetchError | None = None
            try:
                stub = await self._coordinator_stub(deadline)
                response = await self._call(
                    stub,
                    "OffsetCommit",
                    ketch_pb2.OffsetCommitRequest(
                        group_id=self.group_id,
                        member_id=member_id,
                        generation=generation,
                        offsets=[
                            ketch_pb2.CommittedPartitionOffset(
                                topic=tp.topic,
                                partition=tp.partition,
                                offset=o.offset,
                                leader_epoch=o.leader_epoch,
                                metadata=o.metadata,
                            )
                            for tp, o in todo.items()
                        ],
                    ),
                    self.request_timeout,
                )
                codes = [response.status.error_code] if response.status.error_code else []
                for r in response.offsets:
                    tp = TopicPartition(r.topic, r.partition)
                    if r.error_code == ErrorCode.NONE and tp in todo:
                        self.last_committed[tp] = todo.pop(tp).offset
                    elif r.error_code:
                        codes.append(r.error_code)
                if not todo:
                    return
                code = codes[0] if codes else ErrorCode.UNKNOWN_SERVER_ERROR
                err = error_for(code, response.status.error_message or "OffsetCommit failed")
            except KetchError as e:
                err = e
            action = action_for(err.code)
            if action in (Action.REJOIN, Action.RESET_MEMBER):
                if self.subscribed and not self._rebalancing and generation == self.generation:
                    self.request_rejoin(f"commit: {err.code.name}")
                raise CommitFailedError(
                    f"group {self.group_id!r} refused the commit of generation {generation} "
                    f"({err.code.name}): the group rebalanced, so these partitions may belong to another member; "
                    "poll() to rejoin",
                    err.code,
                )
            if action is Action.FATAL:
                raise err
            if action is Action.FIND_COORDINATOR:
                self._coordinator = None
            if self.clock() + self.backoff > deadline:
                raise err
            await asyncio.sleep(self.backoff)

    async def fetch_committed(
        self, tps: Iterable[TopicPartition], deadline: float | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """OffsetFetch: the group's committed offset of each partition (None: none committed)."""
        wanted = sorted(TopicPartition(*tp) for tp in tps)
        if not wanted:
            return {}
        deadline = deadline if deadline is not None else self.clock() + self.request_timeout
        request = ketch_pb2.OffsetFetchRequest(
            group_id=self.group_id,
            partitions=[ketch_pb2.TopicPartitionRef(topic=tp.topic, partition=tp.partition) for tp in wanted],
        )
        while True:
            try:
                stub = await self._coordinator_stub(deadline)
                response = await self._call(stub, "OffsetFetch", request, self.request_timeout)
                code = response.status.error_code
                if code == ErrorCode.NONE:
                    out: dict[TopicPartition, OffsetAndMetadata | None] = dict.fromkeys(wanted)
                    for r in response.offsets:
                        tp = TopicPartition(r.topic, r.partition)
                        if tp in out and r.error_code == ErrorCode.NONE and r.offset >= 0:
                            out[tp] = OffsetAndMetadata(r.offset, r.metadata, r.leader_epoch)
                    return out
                err = error_for(code, response.status.error_message)
            except KetchError as e:
                err = e
            action = action_for(err.code)
            if action is Action.FATAL:
                raise err
            if action is Action.FIND_COORDINATOR or isinstance(err, KetchConnectionError):
                self._coordinator = None
            if self.clock() + self.backoff > deadline:
                raise err
            await asyncio.sleep(self.backoff)

    async def leave(self) -> None:
        """LeaveGroup (best effort, one try) and forget the member id."""
        member_id = self.member_id
        self.member_id, self.generation = "", -1
        self._stop_heartbeats()
        if not member_id:
            return
        try:
            stub = await self._coordinator_stub(self.clock() + self.request_timeout)
            await self._call(
                stub,
                "LeaveGroup",
                ketch_pb2.LeaveGroupRequest(group_id=self.group_id, member_id=member_id),
                min(self.request_timeout, 5.0),
            )
        except KetchError as e:
            log.info("group %s: LeaveGroup failed: %s", self.group_id, e)

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
        self._app_idle.set()
        if final and self.auto_commit:
            offsets = {
                tp: OffsetAndMetadata(off)
                for tp, off in final.items()
                if (tp in self.assigned or not self.subscribed) and self.last_committed.get(tp) != off
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
