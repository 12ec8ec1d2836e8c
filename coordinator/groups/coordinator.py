"""GroupCoordinator: every group of one offsets partition, as a pure state machine.

One ``GroupCoordinator`` per partition of the offsets topic that this broker
leads; ``offsets_partition(group_id, n)`` says which partition (and so which
broker) a group belongs to. Calls take time as arguments (``now_ms``:
monotonic, for sessions and deadlines; ``timestamp_ms``: wall clock, only for
the commit time stored in records) and ids chosen by the driver
(``request_id`` for requests that may wait, ``new_member_id`` for a joining
member — e.g. ``f"{client_id}-{uuid4()}"``); they never block.

The driver's contract (what the broker's asyncio/gRPC driver must do):

1. Load. On becoming leader of offsets partition P: read P from its log
   start to its high watermark, decode each record (``decode_record``), and
   build ``GroupCoordinator.load(records, now_ms=...)``. Until then, answer
   COORDINATOR_LOAD_IN_PROGRESS; for groups of partitions it does not lead,
   NOT_COORDINATOR.
2. Calls, one at a time per coordinator. For each ``GroupResult``: append
   ``encode_record`` of every record to P as one batch (acks=all) and wait
   for it to commit; then send ``response`` (unless None: parked) and each
   ``completed`` reply to the request with that id. A result without
   records is sent once everything appended before it has committed.
3. ``tick(now_ms)`` periodically (every few hundred ms): session, sync and
   rebalance timeouts; its ``completed`` replies are sent the same way.
4. Failure. The state already includes the effect of a result's records
   when the call returns (as Kafka's active controller replays before
   commit). If an append fails or P's leadership is lost, drop this object,
   answer every ``parked_requests()`` id and every unsent response with
   NOT_COORDINATOR, and let the new leader load P (step 1): the log is the
   truth.

Transactions (txn_offsets.py): ``txn_offset_commit`` returns records with
``transactional=(pid, epoch)``: step 2 appends them as ONE transactional
batch of that producer. When the driver WRITES a transaction marker of pid
to P, it calls ``complete_transaction(pid, commit)`` right after (under the
same lock); a marker not written (duplicate, stale) must not call it. Load
(step 1) passes the records of transactional batches as
``TransactionalRecord`` and markers as ``TransactionMarker`` (replay.py).

See membership.py (join/sync/heartbeat/leave/timeouts), offsets.py
(commit/fetch/reset), txn_offsets.py (transactional commits), admin.py (list/describe/delete), replay.py (load).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from coordinator.groups import admin, membership, offsets, replay, txn_offsets
from coordinator.groups.replay import LogEntry
from coordinator.groups.results import (
    AdminResponse,
    CommitResponse,
    Effects,
    FetchResponse,
    GroupConfig,
    GroupDescription,
    GroupListing,
    GroupResult,
    HeartbeatResponse,
    JoinResponse,
    LeaveResponse,
    OffsetCommit,
    SyncResponse,
    TickReport,
)
from coordinator.groups.state import Group, GroupState, Member
from ketch.assignors.base import TopicPartition
from ketch.errors import ErrorCode


def offsets_partition(group_id: str, partitions: int) -> int:
    """The offsets-topic partition that holds ``group_id`` (a stable hash: CRC-32 of the UTF-8 id)."""
    return zlib.crc32(group_id.encode()) % partitions


class GroupCoordinator:
    def __init__(self, config: GroupConfig | None = None, groups: dict[str, Group] | None = None) -> None:
        self.config = config or GroupConfig()
        self.groups: dict[str, Group] = groups if groups is not None else {}

    @classmethod
    def load(cls, records: Iterable[LogEntry], *, now_ms: int, config: GroupConfig | None = None) -> GroupCoordinator:
        """A coordinator rebuilt from the offsets partition's records and markers, in log order (replay.py)."""
        return cls(config, replay.load(records, now_ms))

    # -- membership --

    def join_group(
        self,
        group_id: str,
        member_id: str,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        *,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        request_id: int,
        now_ms: int,
        new_member_id: str,
        client_id: str = "",
        client_host: str = "",
    ) -> GroupResult[JoinResponse]:
        """JoinGroup; ``member_id=""`` joins as a new member named ``new_member_id``."""
        fx = Effects()
        error = self._join_error(group_id, member_id, protocol_type, protocols, session_timeout_ms)
        if error is not None:
            return fx.result(JoinResponse(error, member_id=member_id))
        existing = self.groups.get(group_id)
        if not member_id and existing is not None and new_member_id in existing.members:
            raise ValueError(f"new member id {new_member_id!r} is already a member of {group_id!r}")
        group = self.groups.setdefault(group_id, Group(group_id))
        candidate = Member(
            member_id or new_member_id,
            client_id,
            client_host,
            session_timeout_ms,
            max(rebalance_timeout_ms, 0) or session_timeout_ms,
            tuple((name, bytes(meta)) for name, meta in protocols),
        )
        membership.join(group, candidate, protocol_type, request_id, now_ms, self.config, fx)
        self._forget_if_blank(group_id)
        return fx.result(None, own_request=request_id)

    def sync_group(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: Mapping[str, bytes],
        *,
        request_id: int,
        now_ms: int,
    ) -> GroupResult[SyncResponse]:
        """SyncGroup; the leader passes every member's assignment, followers pass ``{}``."""
        fx = Effects()
        group = self.groups.get(group_id)
        if group is None:
            return fx.result(SyncResponse(_missing(group_id)))
        membership.sync(group, member_id, generation, assignments, request_id, now_ms, fx)
        return fx.result(None, own_request=request_id)

    def heartbeat(self, group_id: str, member_id: str, generation: int, *, now_ms: int) -> HeartbeatResponse:
        group = self.groups.get(group_id)
        if group is None:
            return HeartbeatResponse(_missing(group_id))
        return HeartbeatResponse(membership.heartbeat(group, member_id, generation, now_ms))

    def leave_group(self, group_id: str, member_id: str, *, now_ms: int) -> GroupResult[LeaveResponse]:
        fx = Effects()
        group = self.groups.get(group_id)
        error = _missing(group_id) if group is None else membership.leave(group, member_id, now_ms, self.config, fx)
        return fx.result(LeaveResponse(error))

    def tick(self, now_ms: int) -> GroupResult[TickReport]:
        """Session, sync and rebalance timeouts of every group."""
        fx = Effects()
        expired: list[tuple[str, str]] = []
        for group in list(self.groups.values()):
            expired += [(group.group_id, m) for m in membership.expire(group, now_ms, self.config, fx)]
        return fx.result(TickReport(tuple(expired)))

    # -- offsets --

    def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        new_offsets: Mapping[TopicPartition, OffsetCommit],
        *,
        now_ms: int,
        timestamp_ms: int,
    ) -> GroupResult[CommitResponse]:
        """OffsetCommit; ``generation=-1, member_id=""`` for a consumer without group membership."""
        fx = Effects()
        group = self.groups.get(group_id)
        if not group_id or (group is None and generation >= 0):
            error = ErrorCode.INVALID_GROUP_ID if not group_id else ErrorCode.UNKNOWN_MEMBER_ID
            return fx.result(CommitResponse({TopicPartition(*tp): error for tp in new_offsets}))
        group = self.groups.setdefault(group_id, Group(group_id))
        response = offsets.commit(
            group,
            member_id,
            generation,
            new_offsets,
            now_ms=now_ms,
            timestamp_ms=timestamp_ms,
            config=self.config,
            fx=fx,
        )
        self._forget_if_blank(group_id)
        return fx.result(response)

    def txn_offset_commit(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        producer_id: int,
        producer_epoch: int,
        new_offsets: Mapping[TopicPartition, OffsetCommit],
        *,
        now_ms: int,
        timestamp_ms: int,
    ) -> GroupResult[CommitResponse]:
        """TxnOffsetCommit: offsets pending for ``producer_id`` until its marker (txn_offsets.py).

        The result's records go in ONE transactional batch of (producer_id, producer_epoch)."""
        fx = Effects()
        group = self.groups.get(group_id)
        error = None
        if not group_id:
            error = ErrorCode.INVALID_GROUP_ID
        elif producer_id < 0 or producer_epoch < 0:
            error = ErrorCode.INVALID_REQUEST
        elif group is None and generation >= 0:
            error = ErrorCode.UNKNOWN_MEMBER_ID
        if error is not None:
            return fx.result(CommitResponse({TopicPartition(*tp): error for tp in new_offsets}))
        group = self.groups.setdefault(group_id, Group(group_id))
        response = txn_offsets.commit(
            group,
            member_id,
            generation,
            producer_id,
            new_offsets,
            now_ms=now_ms,
            timestamp_ms=timestamp_ms,
            config=self.config,
            fx=fx,
        )
        self._forget_if_blank(group_id)
        result = fx.result(response)
        return replace(result, transactional=(producer_id, producer_epoch) if result.records else None)

    def complete_transaction(self, producer_id: int, commit: bool) -> GroupResult[tuple[str, ...]]:
        """The marker of ``producer_id`` was written to this offsets partition: its pending offsets
        become committed (commit) or are dropped (abort). No records; the response names the groups."""
        ended = txn_offsets.complete(self.groups.values(), producer_id, commit)
        for group_id in ended:
            self._forget_if_blank(group_id)
        return GroupResult(tuple(ended))

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None, *, require_stable: bool = False
    ) -> FetchResponse:
        """OffsetFetch: committed offsets of ``partitions`` (all of the group's if None); with
        ``require_stable``, UNSTABLE_OFFSET_COMMIT for those a transaction holds pending."""
        if not group_id:
            return FetchResponse(ErrorCode.INVALID_GROUP_ID, {})
        return offsets.fetch(self.groups.get(group_id), partitions, require_stable)

    # -- admin --

    def list_groups(self) -> list[GroupListing]:
        return admin.list_groups(self.groups.values())

    def describe_group(self, group_id: str) -> GroupDescription:
        return admin.describe(group_id, self.groups.get(group_id))

    def delete_group(self, group_id: str) -> GroupResult[AdminResponse]:
        fx = Effects()
        group = self.groups.get(group_id)
        error = admin.delete(group, fx)
        if group is not None and group.state is GroupState.DEAD:
            del self.groups[group_id]
        return fx.result(AdminResponse(error))

    def reset_offsets(
        self, group_id: str, new_offsets: Mapping[TopicPartition, int | None], *, timestamp_ms: int
    ) -> GroupResult[AdminResponse]:
        """Set (or, for None, delete) committed offsets of an Empty or unknown group."""
        fx = Effects()
        if not group_id:
            return fx.result(AdminResponse(ErrorCode.INVALID_GROUP_ID))
        group = self.groups.setdefault(group_id, Group(group_id))
        error = offsets.reset(group, new_offsets, timestamp_ms, fx)
        self._forget_if_blank(group_id)
        return fx.result(AdminResponse(error))

    def parked_requests(self) -> list[int]:
        """Ids of every parked join and sync: to be failed with NOT_COORDINATOR if this coordinator is dropped."""
        parked = []
        for group in self.groups.values():
            for m in group.members.values():
                parked += [r for r in (m.join_request, m.sync_request) if r is not None]
        return parked

    # -- helpers --

    def _join_error(
        self,
        group_id: str,
        member_id: str,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
    ) -> ErrorCode | None:
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        if not self.config.min_session_timeout_ms <= session_timeout_ms <= self.config.max_session_timeout_ms:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if not protocol_type or not protocols:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        group = self.groups.get(group_id)
        if member_id and (group is None or member_id not in group.members):
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _forget_if_blank(self, group_id: str) -> None:
        group = self.groups.get(group_id)
        if group is not None and group.is_blank():
            del self.groups[group_id]


def _missing(group_id: str) -> ErrorCode:
    return ErrorCode.INVALID_GROUP_ID if not group_id else ErrorCode.UNKNOWN_MEMBER_ID
