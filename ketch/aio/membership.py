"""Group membership on the wire: join, sync, heartbeats, leave (Kafka's AbstractCoordinator).

``Membership`` is the half of a consumer's ``GroupMember`` (group_member.py)
that any group member would need: it keeps the member id and generation,
exchanges JoinGroup and SyncGroup with the coordinator, heartbeats, leaves,
and turns group error codes into actions (``group_rules.action_for``).
What a consumer does with an assignment is ``GroupMember``'s.

Rules:
- Coordinator. Every call goes to the group's coordinator, found, cached
  and forgotten by the coordinator client (coordinator_client.py); a
  coordinator error or transport failure forgets it, and the next call
  looks it up again after ``retry_backoff_ms``.
- Join. A new member joins with member id "" and keeps the id and
  generation the JoinGroup response gives. The member the response names
  leader computes every member's assignment (``_assign``) and sends them in
  SyncGroup; the others send none. No heartbeat goes out from the JoinGroup
  request to the SyncGroup answer.
- Errors. REBALANCE_IN_PROGRESS and ILLEGAL_GENERATION (from Heartbeat,
  JoinGroup, SyncGroup) rejoin keeping the member id; UNKNOWN_MEMBER_ID
  drops the member id and generation (``_reset``) before rejoining;
  coordinator errors forget the coordinator and rejoin after a backoff;
  anything else that is not retriable is fatal (raised).
- Heartbeats go every ``heartbeat_interval_ms`` from their own task while
  the member has a generation and is not rebalancing. A heartbeat looks the
  coordinator up for at most one interval; a failed one is logged and the
  next one tries again.
- Leave. LeaveGroup is best effort (one try, at most 5 s) and the member id
  and generation are forgotten first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ketch.aio.connection import Connection
from ketch.aio.coordinator_client import CoordinatorClient
from ketch.api.v1 import ketch_pb2
from ketch.assignors import PROTOCOL_TYPE
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.group_rules import Action, action_for

__all__ = ["Membership"]

log = logging.getLogger("ketch.consumer.group")


class Membership:
    """Member id, generation, JoinGroup/SyncGroup, heartbeats and LeaveGroup of one member."""

    def __init__(
        self,
        conn: Connection,
        group_id: str,
        *,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        rebalance_timeout_ms: int,
        retry_backoff_ms: int,
        request_timeout_ms: int,
        client_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not group_id:
            raise ValueError("group_id must be a non-empty string")
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        self.conn = conn
        self.group_id = group_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.backoff = retry_backoff_ms / 1000
        self.request_timeout = request_timeout_ms / 1000
        self.client_id = client_id
        self.clock = clock
        self.coordinators = CoordinatorClient(conn, backoff=self.backoff, clock=clock)
        self.member_id = ""
        self.generation = -1
        self.leader = ""
        self.rejoin_reason: str | None = None
        self._rebalancing = False
        self._reset_pending = False  # a heartbeat heard UNKNOWN_MEMBER_ID: reset before the next join
        self._wake = asyncio.Event()
        self._hb_task: asyncio.Task[None] | None = None

    def request_rejoin(self, reason: str) -> None:
        if self.rejoin_reason is None:
            self.rejoin_reason = reason
        self._wake.set()

    async def _reset(self) -> None:
        """The coordinator does not know this member: drop the member id and generation."""
        self.member_id, self.generation = "", -1
        self._stop_heartbeats()

    async def _assign(self, protocol: str, members: list[tuple[str, bytes]]) -> dict[str, bytes]:
        """The leader's assignment: member id -> encoded assignment."""
        raise NotImplementedError

    # -- join and sync ------------------------------------------------------------------------
    async def _join_sync(self, addr: tuple[str, int], protocols: list[tuple[str, bytes]]) -> tuple[Any, Any]:
        """JoinGroup, the leader's assignment, SyncGroup at the coordinator ``addr``: both answers, or
        Nones when the rebalance must restart."""
        self._rebalancing = True  # no heartbeats from here to the SyncGroup answer
        try:
            join = await self.coordinators.send(
                self.group_id,
                addr,
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
            self.member_id, self.generation, self.leader = join.member_id, join.generation, join.leader
            assignments: dict[str, bytes] = {}
            if join.leader == join.member_id:
                members = [(m.member_id, bytes(m.metadata)) for m in join.members]
                assignments = await self._assign(join.protocol, members)
            sync = await self.coordinators.send(
                self.group_id,
                addr,
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
        finally:
            self._rebalancing = False

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
            await self._reset()
        if action is Action.FIND_COORDINATOR:
            self.coordinators.forget(self.group_id)
        self.request_rejoin(f"{what}: {err.code.name}")
        if action is not Action.REJOIN:
            await asyncio.sleep(self.backoff)
        return False

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
                addr = await self.coordinators.find(self.group_id, self.clock() + self.heartbeat_interval)
                response = await self.coordinators.send(
                    self.group_id,
                    addr,
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
            if action is Action.FIND_COORDINATOR:
                self.coordinators.forget(self.group_id)
            elif action is Action.RESET_MEMBER:
                self._reset_pending = True  # the member loop resets, then rejoins
                self.request_rejoin("heartbeat: UNKNOWN_MEMBER_ID")
            elif action is Action.REJOIN:
                self.request_rejoin(f"heartbeat: {ErrorCode(response.status.error_code).name}")

    # -- leave --------------------------------------------------------------------------------
    async def leave(self) -> None:
        """LeaveGroup (best effort, one try) and forget the member id."""
        member_id = self.member_id
        self.member_id, self.generation = "", -1
        self._stop_heartbeats()
        if not member_id:
            return
        try:
            addr = await self.coordinators.find(self.group_id, self.clock() + self.request_timeout)
            await self.coordinators.send(
                self.group_id,
                addr,
                "LeaveGroup",
                ketch_pb2.LeaveGroupRequest(group_id=self.group_id, member_id=member_id),
                min(self.request_timeout, 5.0),
            )
        except KetchError as e:
            log.info("group %s: LeaveGroup failed: %s", self.group_id, e)
