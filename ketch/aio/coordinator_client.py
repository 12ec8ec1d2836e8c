"""The client side of group coordinators: FindCoordinator, its cache, retries across coordinator moves.

Used by the Admin (every consumer-group call) and by a consumer's
``GroupMember`` (join, sync, heartbeat, commit, offset fetch, leave).

Rules:
- A group lives on its coordinator, which FindCoordinator (on any broker)
  names; every other call of the group goes there. The answer is cached per
  group id until something says the coordinator moved.
- The one retry rule: an answer or error that ``group_rules.action_for``
  classes FIND_COORDINATOR (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
  COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT) or a transport failure
  forgets the coordinator, backs off (``backoff`` doubling up to
  ``max_backoff``) and looks it up again, until the deadline (default:
  ``request_timeout_ms`` from now); then the last error is raised. Any other
  answer is the caller's to act on; any other error is raised at once.
- A transport failure of a call at the coordinator forgets it at once, so
  the next call (a heartbeat, a retry) looks it up again.
- Errors name the group (``group_error``); transport errors name the
  coordinator's address and the group.
- ``key_type=TRANSACTION_KEY`` makes the same client find and call
  transaction coordinators (the leader of the id's ``__transaction_state``
  partition); the keys are then transactional ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ketch.aio.connection import Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.group_rules import Action, action_for

__all__ = ["GROUP_KEY", "TRANSACTION_KEY", "CoordinatorClient", "group_error", "status_of"]

GROUP_KEY, TRANSACTION_KEY = 0, 1  # FindCoordinatorRequest.key_type

Status = Callable[[Any], tuple[int, str]]


def status_of(response: Any) -> tuple[int, str]:
    """The request-level ``GroupStatus`` of a group response: ``(code, message)``."""
    return response.status.error_code, response.status.error_message


def _never_retry(response: Any) -> tuple[int, str]:
    return ErrorCode.NONE, ""


def group_error(code: int, message: str, group_id: str) -> KetchError:
    """The typed error of a group answer; the message names the group."""
    if not message:
        if code == ErrorCode.NON_EMPTY_GROUP:
            message = f"group {group_id!r} has active members; stop its consumers first"
        elif code == ErrorCode.GROUP_ID_NOT_FOUND:
            message = f"group {group_id!r} does not exist"
        else:
            message = error_for(code).code.name
    if group_id not in message:
        message = f"group {group_id!r}: {message}"
    return error_for(code, message)


class CoordinatorClient:
    """Coordinator lookups and calls of one client object (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        *,
        backoff: float,
        max_backoff: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        key_type: int = GROUP_KEY,
    ) -> None:
        self.conn = conn
        self.key_type = key_type
        self.noun = "transactional id" if key_type == TRANSACTION_KEY else "group"
        self.backoff = backoff
        self.max_backoff = backoff if max_backoff is None else max_backoff
        self.clock = clock
        self._coordinators: dict[str, tuple[str, int]] = {}  # group id -> coordinator address

    def forget(self, group_id: str) -> None:
        self._coordinators.pop(group_id, None)

    async def find(self, group_id: str, deadline: float | None = None) -> tuple[str, int]:
        """The coordinator's address: cached, else looked up (retried until ``deadline``)."""
        addr: tuple[str, int] = await self.retrying(
            f"{self.noun} {group_id!r}", lambda: self._lookup(group_id), deadline
        )
        return addr

    async def send(
        self, group_id: str, addr: tuple[str, int], method: str, request: Any, timeout: float | None = None
    ) -> Any:
        """One call of ``method`` at the coordinator ``addr``; a transport failure forgets it."""
        try:
            return await self.conn.call_at(
                addr, method, request, timeout, f"coordinator {addr[0]}:{addr[1]} of {self.noun} {group_id!r}"
            )
        except KetchError:
            self.forget(group_id)
            raise

    async def call(
        self,
        group_id: str,
        method: str,
        request: Any,
        status: Status = status_of,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``method`` at the group's coordinator, found and retried as the module docstring says."""
        if not group_id and self.key_type == GROUP_KEY:
            raise KetchError("a consumer group id must not be empty", code=ErrorCode.INVALID_GROUP_ID)

        async def once() -> Any:
            addr = await self._lookup(group_id)
            return await self.send(group_id, addr, method, request, timeout)

        return await self.retrying(f"{self.noun} {group_id!r}", once, deadline, status, lambda: self.forget(group_id))

    async def retrying(
        self,
        what: str,
        call: Callable[[], Awaitable[Any]],
        deadline: float | None = None,
        status: Status = _never_retry,
        on_retry: Callable[[], None] = lambda: None,
    ) -> Any:
        """``call()`` until its answer is no coordinator error and it raised no transport failure, or time is up."""
        if deadline is None:
            deadline = self.clock() + self.conn.request_timeout
        backoff = self.backoff
        while True:
            try:
                response = await call()
                code, message = status(response)
                if action_for(code) is not Action.FIND_COORDINATOR:
                    return response
                err = error_for(code, f"{what}: {message or error_for(code).code.name}")
            except KetchError as e:
                if action_for(e.code) is not Action.FIND_COORDINATOR:
                    raise
                err = e
            on_retry()
            if self.clock() + backoff > deadline:
                raise err
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _lookup(self, group_id: str) -> tuple[str, int]:
        addr = self._coordinators.get(group_id)
        if addr is None:
            found = await self.conn.call_any(
                "FindCoordinator", ketch_pb2.FindCoordinatorRequest(group_id=group_id, key_type=self.key_type)
            )
            assert isinstance(found, ketch_pb2.FindCoordinatorResponse)
            if found.status.error_code != ErrorCode.NONE:
                if self.key_type == GROUP_KEY:
                    raise group_error(found.status.error_code, found.status.error_message, group_id)
                message = found.status.error_message or ErrorCode(found.status.error_code).name
                raise error_for(found.status.error_code, f"{self.noun} {group_id!r}: {message}")
            addr = self._coordinators[group_id] = (found.host, found.port)
        return addr
