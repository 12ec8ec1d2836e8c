"""ControllerClient: a broker's channel to the active controller of the quorum.

Rules:
- It knows every voter's address (``controller_quorum_voters``) and tries the
  one it last saw lead first. An answer of NOT_CONTROLLER with a leader hint
  moves it there at once; a hint naming the voter that answered (it leads but
  has not activated yet) asks it again after a short backoff; no hint, or a
  transport error, moves it to the next voter after a short backoff (never
  back to a paused voter while the new leader is about to take over). Any other answer is returned to
  the caller as it is: refusals are the caller's to handle.
- A hinted leader it has no address for is a controller added at runtime
  (KIP-853): it asks the node that named it for the voter set
  (DescribeQuorum) and adds the addresses it lacks.
- Each attempt is bounded by ``attempt_timeout_s`` (5 s; heartbeats pass their
  interval's worth), so a paused or cut-off controller costs one attempt, not
  the call: the next voter is asked.
- A call gives up after ``timeout_s`` in total with REQUEST_TIMED_OUT, naming
  the voters it tried, so a quorum that has lost its majority shows up as a
  readable error and not a hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from ketch.api.v1 import controller_pb2 as cpb
from ketch.api.v1 import controller_pb2_grpc
from ketch.errors import ErrorCode, KetchError
from ketch.tls import PLAINTEXT, SecurityConfig, open_aio_channel

log = logging.getLogger("ketch.node.controller_client")


class HasStatus(Protocol):
    @property
    def status(self) -> cpb.ControllerStatus: ...


T = TypeVar("T", bound=HasStatus)
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


class ControllerClient:
    def __init__(self, voters: dict[int, str], *, backoff_s: float = 0.1, security: SecurityConfig = PLAINTEXT) -> None:
        self.voters = dict(voters)
        self._security = security
        self._order = sorted(self.voters)
        self._leader = self._order[0]
        self._backoff_s = backoff_s
        self._channels: dict[int, grpc.aio.Channel] = {}

    def stub(self, node_id: int) -> controller_pb2_grpc.KetchControllerStub:
        channel = self._channels.get(node_id)
        if channel is None:
            channel = open_aio_channel(self.voters[node_id], self._security, CHANNEL_OPTIONS)
            self._channels[node_id] = channel
        return controller_pb2_grpc.KetchControllerStub(channel)

    @property
    def leader_guess(self) -> int:
        return self._leader

    def _next(self, after: int) -> int:
        i = self._order.index(after)
        return self._order[(i + 1) % len(self._order)]

    async def call(
        self,
        method: Callable[[controller_pb2_grpc.KetchControllerStub], Callable[..., Awaitable[T]]],
        request: Any,
        *,
        timeout_s: float = 15.0,
        attempt_timeout_s: float = 5.0,
    ) -> T:
        deadline = time.monotonic() + timeout_s
        target = self._leader
        last_error = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KetchError(
                    f"no active controller answered within {timeout_s}s (voters {self.voters}); last: {last_error}",
                    code=ErrorCode.REQUEST_TIMED_OUT,
                )
            try:
                response = await method(self.stub(target))(request, timeout=min(remaining, attempt_timeout_s))
            except grpc.aio.AioRpcError as exc:
                last_error = f"node {target}: {exc.code().name} {exc.details()}"
                target = self._next(target)
                await asyncio.sleep(self._backoff_s)
                continue
            status = response.status
            if status.error_code != ErrorCode.NOT_CONTROLLER:
                self._leader = target
                return response
            last_error = f"node {target}: {status.error_message}"
            if status.leader_id > 0 and status.leader_id not in self.voters:
                await self._learn_voters(target)
            if status.leader_id > 0 and status.leader_id in self.voters and status.leader_id != target:
                target = status.leader_id
            elif status.leader_id == target:  # it leads but is not active yet (activation): ask it again
                await asyncio.sleep(self._backoff_s)
            else:
                target = self._next(target)
                await asyncio.sleep(self._backoff_s)

    async def _learn_voters(self, node_id: int) -> None:
        """Add the voters ``node_id`` knows (with their addresses) that this client does not."""
        try:
            quorum = await self.stub(node_id).DescribeQuorum(cpb.DescribeQuorumRequest(), timeout=2.0)
        except grpc.aio.AioRpcError:
            return
        for voter in quorum.voters:
            if voter.node_id not in self.voters and voter.address:
                self.voters[voter.node_id] = voter.address
        self._order = sorted(self.voters)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def parse_voters(spec: str) -> dict[int, str]:
    """``1@host:port,2@host:port`` (KRaft's controller.quorum.voters) → {1: "host:port", ...}."""
    voters: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        node, sep, address = part.partition("@")
        if not sep or not node.isdigit() or ":" not in address:
            raise ValueError(f"voter {part!r} is not ID@HOST:PORT")
        voters[int(node)] = address
    return voters
