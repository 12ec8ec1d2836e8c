"""QuorumMembership: the controller quorum's voters, observers and KIP-853 changes, for the gRPC service.

The rules live in the Raft core (coordinator/raft/membership.py); this module
only turns the Raft driver's view and calls into ``controller.proto`` values.

Rules:
- ``describe_voters``/``describe_observers`` are this node's view: the voter set
  in force here (with directory ids, "" while unbound) and, on the Raft leader,
  the observers it replicates to. Addresses are where this node reaches them.
- ``add_voter``/``remove_voter`` answer once the change is committed and applied
  here, with the voters after it. Only the Raft leader takes them: elsewhere the
  answer is NOT_CONTROLLER with the leader known (the caller retries there).
  DUPLICATE_VOTER and VOTER_NOT_FOUND are Kafka's codes; a change refused for
  now (another change pending, a new leader, an observer not caught up within
  ``timeout_ms``) is REQUEST_TIMED_OUT with the reason; the last voter cannot be
  removed (INVALID_REQUEST).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Protocol

from coordinator.raft import NotLeader, Status
from coordinator.raft.membership import ChangeNotReady, DuplicateVoter, MembershipChangeRefused, VoterNotFound
from ketch.api.v1 import controller_pb2 as cpb
from ketch.errors import ErrorCode

log = logging.getLogger("ketch.controller")

DEFAULT_TIMEOUT_MS = 30_000


class MembershipDriver(Protocol):
    """What this module needs of coordinator.raft_driver.RaftDriver."""

    def status(self) -> Status: ...

    def address_of(self, node_id: int) -> str: ...

    async def add_voter(self, node_id: int, address: str = "", timeout_s: float = 10.0) -> int: ...

    async def remove_voter(self, node_id: int, timeout_s: float = 10.0) -> int: ...


class QuorumMembership:
    def __init__(self, raft: MembershipDriver) -> None:
        self.raft = raft

    def describe_voters(self) -> list[cpb.QuorumVoter]:
        status = self.raft.status()
        match = dict(status.match)
        return [
            cpb.QuorumVoter(
                node_id=v.id,
                address=v.address or self.raft.address_of(v.id),
                match_index=match.get(v.id, 0),
                directory_id=v.directory,
            )
            for v in status.voters
        ]

    def describe_observers(self) -> list[cpb.QuorumVoter]:
        status = self.raft.status()
        match = dict(status.match)
        return [
            cpb.QuorumVoter(node_id=k, address=self.raft.address_of(k), match_index=match.get(k, 0))
            for k in status.observers
        ]

    async def add_voter(self, request: cpb.AddRaftVoterRequest) -> cpb.RaftVoterChangeResponse:
        timeout_s = (request.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000
        return await self._change(
            f"add controller {request.node_id}",
            self.raft.add_voter(request.node_id, request.address, timeout_s=timeout_s),
        )

    async def remove_voter(self, request: cpb.RemoveRaftVoterRequest) -> cpb.RaftVoterChangeResponse:
        timeout_s = (request.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000
        return await self._change(
            f"remove controller {request.node_id}", self.raft.remove_voter(request.node_id, timeout_s=timeout_s)
        )

    async def _change(self, what: str, change: Awaitable[int]) -> cpb.RaftVoterChangeResponse:
        out = cpb.RaftVoterChangeResponse(leader_id=self.raft.status().leader)
        try:
            out.index = await change
        except NotLeader as exc:
            out.error_code, out.leader_id = ErrorCode.NOT_CONTROLLER, exc.leader
            out.error_message = f"{what}: this node is not the Raft leader ({exc})"
        except DuplicateVoter as exc:
            out.error_code, out.error_message = ErrorCode.DUPLICATE_VOTER, f"{what}: {exc}"
        except VoterNotFound as exc:
            out.error_code, out.error_message = ErrorCode.VOTER_NOT_FOUND, f"{what}: {exc}"
        except (ChangeNotReady, TimeoutError) as exc:
            out.error_code = ErrorCode.REQUEST_TIMED_OUT
            out.error_message = f"{what}: not done in time: {exc or 'the change did not commit'}"
        except MembershipChangeRefused as exc:
            out.error_code, out.error_message = ErrorCode.INVALID_REQUEST, f"{what}: {exc}"
        else:
            log.info("%s: committed at Raft index %d", what, out.index)
        out.voters.extend(self.describe_voters())
        return out
