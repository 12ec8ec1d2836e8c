"""Shared helpers for the consumer group tests (no tests here): a tiny in-memory driver and invariant checks.

``Driver`` plays the broker's part from coordinator/groups/coordinator.py's
contract: it hands out request and member ids, keeps the offsets log as the
encoded bytes it would append (so every record goes through the codec), and
files every response and completed reply under its request id, checking that
no request is answered twice. ``now`` is the simulated monotonic clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from coordinator.groups import (
    GroupConfig,
    GroupCoordinator,
    GroupResult,
    GroupState,
    JoinResponse,
    OffsetCommit,
    SyncResponse,
    decode_record,
    encode_record,
)
from ketch.assignors import TopicPartition

R = TypeVar("R")

PROTOCOLS: tuple[tuple[str, bytes], ...] = (("range", b"sub:a"), ("roundrobin", b"sub:a"))
FAST = GroupConfig(min_session_timeout_ms=10, initial_rebalance_delay_ms=0)


class Driver:
    def __init__(self, config: GroupConfig = FAST) -> None:
        self.config = config
        self.coordinator = GroupCoordinator(config)
        self.log: list[tuple[bytes, bytes | None]] = []
        self.answers: dict[int, Any] = {}
        self.issued: list[int] = []
        self.now = 0
        self._next_request = 0
        self._next_member = 0

    def _request(self) -> int:
        self._next_request += 1
        self.issued.append(self._next_request)
        return self._next_request

    def take(self, result: GroupResult[R], request_id: int | None = None) -> R | None:
        self.log += [encode_record(r) for r in result.records]
        if request_id is not None and result.response is not None:
            self._file(request_id, result.response)
        for reply in result.completed:
            self._file(reply.request_id, reply.response)
        return result.response

    def _file(self, request_id: int, response: object) -> None:
        assert request_id not in self.answers, f"request {request_id} answered twice"
        self.answers[request_id] = response

    def join(
        self,
        group: str,
        member: str = "",
        protocols: Sequence[tuple[str, bytes]] = PROTOCOLS,
        session_ms: int = 1000,
        rebalance_ms: int = 2000,
        protocol_type: str = "consumer",
    ) -> int:
        request = self._request()
        self._next_member += 1
        result = self.coordinator.join_group(
            group,
            member,
            protocol_type,
            protocols,
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms,
            request_id=request,
            now_ms=self.now,
            new_member_id=f"member-{self._next_member}",
            client_id="client",
            client_host="/127.0.0.1",
        )
        self.take(result, request)
        return request

    def sync(self, group: str, member: str, generation: int, assignments: Mapping[str, bytes] | None = None) -> int:
        request = self._request()
        result = self.coordinator.sync_group(
            group, member, generation, assignments or {}, request_id=request, now_ms=self.now
        )
        self.take(result, request)
        return request

    def join_answer(self, request: int) -> JoinResponse:
        answer = self.answers[request]
        assert isinstance(answer, JoinResponse)
        return answer

    def sync_answer(self, request: int) -> SyncResponse:
        answer = self.answers[request]
        assert isinstance(answer, SyncResponse)
        return answer

    def heartbeat(self, group: str, member: str, generation: int) -> int:
        return self.coordinator.heartbeat(group, member, generation, now_ms=self.now).error

    def leave(self, group: str, member: str) -> int:
        response = self.take(self.coordinator.leave_group(group, member, now_ms=self.now))
        assert response is not None
        return response.error

    def tick(self, advance_ms: int = 0) -> tuple[tuple[str, str], ...]:
        self.now += advance_ms
        report = self.take(self.coordinator.tick(self.now))
        assert report is not None
        return report.expired

    def commit(
        self, group: str, member: str, generation: int, offsets: Mapping[TopicPartition, int], metadata: str = ""
    ) -> dict[TopicPartition, int]:
        request = {tp: OffsetCommit(offset, metadata=metadata) for tp, offset in offsets.items()}
        result = self.coordinator.commit_offsets(
            group, member, generation, request, now_ms=self.now, timestamp_ms=1_700_000_000_000 + self.now
        )
        response = self.take(result)
        assert response is not None
        return dict(response.errors)

    def delete(self, group: str) -> int:
        response = self.take(self.coordinator.delete_group(group))
        assert response is not None
        return response.error

    def reset(self, group: str, offsets: Mapping[TopicPartition, int | None]) -> int:
        response = self.take(self.coordinator.reset_offsets(group, offsets, timestamp_ms=1_700_000_000_000 + self.now))
        assert response is not None
        return response.error

    def committed(self, group: str) -> dict[TopicPartition, int]:
        return {tp: c.offset for tp, c in self.coordinator.fetch_offsets(group).offsets.items()}

    def state(self, group: str) -> GroupState:
        return self.coordinator.describe_group(group).state

    def replayed(self) -> GroupCoordinator:
        """A new coordinator loaded from the log, as after a failover."""
        return GroupCoordinator.load((decode_record(k, v) for k, v in self.log), now_ms=self.now, config=self.config)

    def stable_group(self, group: str, size: int) -> list[tuple[str, int]]:
        """Bring ``size`` new members to Stable (delay 0); returns (member id, generation), leader first."""
        requests = [self.join(group) for _ in range(size)]
        if size > 1:  # the first member's generation is done; the others' joins rebalance it
            first = self.join_answer(requests[0])
            requests[0] = self.join(group, first.member_id)
        answers = [self.join_answer(r) for r in requests]
        leader = next(a for a in answers if a.member_id == a.leader)
        followers = [a for a in answers if a is not leader]
        syncs = [self.sync(group, a.member_id, a.generation) for a in followers]
        assignments = {m: f"{m}@{leader.generation}".encode() for m, _ in leader.members}
        syncs.append(self.sync(group, leader.member_id, leader.generation, assignments))
        assert all(self.sync_answer(s).error == 0 for s in syncs)
        return [(a.member_id, a.generation) for a in [leader, *followers]]


def check_invariants(driver: Driver) -> None:
    """The state invariants of coordinator/groups/state.py, and replay = live for persisted state."""
    live = driver.coordinator
    for group in live.groups.values():
        if group.state is GroupState.STABLE:
            assert group.leader in group.members
            assert all(m.assignment is not None for m in group.members.values())
        if group.state in (GroupState.EMPTY, GroupState.DEAD):
            assert not group.members
        for m in group.members.values():
            assert m.join_request is None or group.state is GroupState.PREPARING_REBALANCE
            assert m.sync_request is None or group.state is GroupState.COMPLETING_REBALANCE
    replayed = driver.replayed()
    assert set(replayed.groups) <= set(live.groups)
    for group_id, group in live.groups.items():
        restored = replayed.groups.get(group_id)
        assert (restored.offsets if restored else {}) == group.offsets
        if group.state in (GroupState.STABLE, GroupState.EMPTY) and (group.generation or group.offsets):
            assert restored is not None
            assert restored.metadata_value() == group.metadata_value()
            assert restored.state is group.state
    parked = set(live.parked_requests())
    assert not parked & set(driver.answers)
    assert parked | set(driver.answers) == set(driver.issued)
