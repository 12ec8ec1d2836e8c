"""A consumer group's committed offsets: OffsetCommit and OffsetFetch at the coordinator.

Used by ``GroupMember`` (group_member.py), which decides what to commit and
when; this module does the requests.

Rules:
- A commit carries the member id and generation that ``generation()``
  gives at each attempt (a consumer that uses ``assign()`` with a group id
  commits with member "" and generation -1). Answers are per partition:
  a committed partition is remembered in ``last_committed`` and is not
  sent again by a retry.
- ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or REBALANCE_IN_PROGRESS fence the
  commit: ``on_fenced(generation, code)`` runs, then ``CommitFailedError``
  is raised (the partitions may belong to another member now). Fatal codes
  are raised as they are. Coordinator errors and transport failures forget
  the coordinator; they and other retriable codes are retried every
  ``retry_backoff_ms`` until the deadline (default: ``request_timeout_ms``).
- OffsetFetch returns the committed offset of each partition asked for
  (None: nothing committed), retried across coordinator moves as every
  group call is (coordinator_client.py). A partition answered
  UNSTABLE_OFFSET_COMMIT (a transaction holds offsets for it, KIP-447) is
  asked again every ``retry_backoff_ms`` until the deadline: starting from
  the offset before an undecided transaction would read its input twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping

from ketch.aio.coordinator_client import CoordinatorClient, group_error
from ketch.api.v1 import ketch_pb2
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.group_rules import Action, CommitFailedError, OffsetAndMetadata, action_for
from ketch.records import TopicPartition

__all__ = ["GroupOffsets"]


class GroupOffsets:
    """OffsetCommit and OffsetFetch of one group (see the module docstring)."""

    def __init__(
        self,
        coordinators: CoordinatorClient,
        group_id: str,
        *,
        generation: Callable[[], tuple[str, int]],
        on_fenced: Callable[[int, ErrorCode], None],
        request_timeout: float,
        backoff: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordinators = coordinators
        self.group_id = group_id
        self.generation = generation
        self.on_fenced = on_fenced
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.clock = clock
        self.last_committed: dict[TopicPartition, int] = {}

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], deadline: float | None = None) -> None:
        """OffsetCommit, retried across coordinator changes until ``deadline``."""
        deadline = deadline if deadline is not None else self.clock() + self.request_timeout
        todo = dict(offsets)
        while True:
            member_id, generation = self.generation()
            try:
                addr = await self.coordinators.find(self.group_id, deadline)
                response = await self.coordinators.send(
                    self.group_id,
                    addr,
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
                self.on_fenced(generation, err.code)
                raise CommitFailedError(
                    f"group {self.group_id!r} refused the commit of generation {generation} "
                    f"({err.code.name}): the group rebalanced, so these partitions may belong to another member; "
                    "poll() to rejoin",
                    err.code,
                )
            if action is Action.FATAL:
                raise err
            if action is Action.FIND_COORDINATOR:
                self.coordinators.forget(self.group_id)
            if self.clock() + self.backoff > deadline:
                raise err
            await asyncio.sleep(self.backoff)

    async def fetch(
        self, tps: Iterable[TopicPartition], deadline: float | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """OffsetFetch: the group's committed offset of each partition (None: none committed)."""
        wanted = sorted(TopicPartition(*tp) for tp in tps)
        if not wanted:
            return {}
        request = ketch_pb2.OffsetFetchRequest(
            group_id=self.group_id,
            partitions=[ketch_pb2.TopicPartitionRef(topic=tp.topic, partition=tp.partition) for tp in wanted],
        )
        deadline = deadline if deadline is not None else self.clock() + self.request_timeout
        while True:
            response = await self.coordinators.call(self.group_id, "OffsetFetch", request, deadline=deadline)
            if response.status.error_code != ErrorCode.NONE:
                raise group_error(response.status.error_code, response.status.error_message, self.group_id)
            unstable = next((r for r in response.offsets if _retry_fetch(r.error_code)), None)
            if unstable is None:
                break
            if self.clock() + self.backoff > deadline:
                raise KetchError(
                    f"group {self.group_id!r}: {unstable.topic}-{unstable.partition}: "
                    "UNSTABLE_OFFSET_COMMIT: an open transaction holds offsets for it; try again",
                    code=ErrorCode.REQUEST_TIMED_OUT,
                )
            await asyncio.sleep(self.backoff)
        out: dict[TopicPartition, OffsetAndMetadata | None] = dict.fromkeys(wanted)
        for r in response.offsets:
            tp = TopicPartition(r.topic, r.partition)
            if tp in out and r.error_code == ErrorCode.NONE and r.offset >= 0:
                out[tp] = OffsetAndMetadata(r.offset, r.metadata, r.leader_epoch)
        return out


UNSTABLE_OFFSET_COMMIT = 88  # KIP-447; ketch.errors names it once the transactions round lands


def _retry_fetch(code: int) -> bool:
    """A partition's OffsetFetch answer to ask again: offsets pending in an open transaction. (Other
    per-partition codes, e.g. a topic deleted since, still read as nothing committed.)"""
    return code == UNSTABLE_OFFSET_COMMIT
