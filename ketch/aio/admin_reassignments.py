"""The Admin's partition reassignment calls (KIP-455; kafka-reassign-partitions.sh).

A mixin of ``Admin`` (admin.py), using its connection. Rules:
- ``alter_partition_reassignments({tp: [replicas] | None})`` starts a move of
  each partition to its target replicas (the first is the preferred leader),
  replaces a move in progress, or cancels it (None). Any broker takes the
  request and forwards it to the active controller; it answers once its own
  metadata holds the change. Every partition is handled on its own; then the
  first failed one raises its typed error (``KetchError`` with
  INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS,
  UNKNOWN_TOPIC_OR_PARTITION...), naming the partition. A move returns once it
  has *started*: the controller completes it when every target replica is in
  sync (``list_partition_reassignments`` shows it until then).
- ``list_partition_reassignments(topics=None)``: the moves in progress, per
  partition: all replicas while moving (the target, then the ones being
  removed), the ones being added and the ones being removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ketch.aio.connection import Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import error_for
from ketch.records import TopicPartition

__all__ = ["PartitionReassignment", "ReassignmentAdmin"]


@dataclass(frozen=True)
class PartitionReassignment:
    """A move in progress (Kafka's ``PartitionReassignment``)."""

    replicas: list[int]  # every replica while it moves: the target, then the ones being removed
    adding_replicas: list[int]
    removing_replicas: list[int]

    @property
    def target_replicas(self) -> list[int]:
        return [r for r in self.replicas if r not in self.removing_replicas]


class ReassignmentAdmin:
    _conn: Connection

    async def alter_partition_reassignments(self, reassignments: Mapping[TopicPartition, Sequence[int] | None]) -> None:
        """Start, replace (a replica list) or cancel (None) the move of each partition."""
        request = ketch_pb2.AlterPartitionReassignmentsRequest()
        for tp, replicas in reassignments.items():
            topic, partition = tp
            if replicas is None:
                request.partitions.add(topic=topic, partition=partition, cancel=True)
            else:
                request.partitions.add(topic=topic, partition=partition, replicas=[int(r) for r in replicas])
        response = await self._conn.call_any("AlterPartitionReassignments", request)
        assert isinstance(response, ketch_pb2.AlterPartitionReassignmentsResponse)
        for r in response.results:
            if r.error_code != 0:
                where = f"{r.topic}-{r.partition}"
                message = r.error_message if where in r.error_message else f"{where}: {r.error_message}"
                raise error_for(r.error_code, message)

    async def list_partition_reassignments(
        self, topics: Iterable[str] | None = None
    ) -> dict[TopicPartition, PartitionReassignment]:
        """The moves in progress (of ``topics``, or of every topic)."""
        names = [topics] if isinstance(topics, str) else list(topics or [])
        request = ketch_pb2.ListPartitionReassignmentsRequest(topics=names)
        response = await self._conn.call_any("ListPartitionReassignments", request)
        assert isinstance(response, ketch_pb2.ListPartitionReassignmentsResponse)
        return {
            TopicPartition(r.topic, r.partition): PartitionReassignment(
                list(r.replicas), list(r.adding_replicas), list(r.removing_replicas)
            )
            for r in sorted(response.reassignments, key=lambda r: (r.topic, r.partition))
        }
