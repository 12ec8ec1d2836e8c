"""ListGroups on a broker that leads an offsets partition it has not loaded yet (node/group_service.py).

Just after a broker takes an offsets partition over, its coordinator is loading the partition's
log; the groups there are not known yet. The handler must say so (COORDINATOR_LOAD_IN_PROGRESS,
retriable) with the groups it has, as Kafka's broker does, instead of an answer that looks
complete and is not. The handler runs over the real pure coordinator and the driver's
``LoadedPartition``s; the admin's retry of that answer is in tests/test_group_admin.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from coordinator.groups import GroupCoordinator
from ketch.api.v1 import ketch_pb2 as pb
from ketch.assignors.base import TopicPartition
from node.group_service import GroupHandlers
from node.internal_topic import LoadedPartition

TOPIC = "__consumer_offsets"


def list_groups(partitions: dict[int, LoadedPartition[Any]]) -> pb.ListGroupsResponse:
    handler = GroupHandlers.ListGroups.__wrapped__  # type: ignore[attr-defined]  # without the metrics timer
    service = SimpleNamespace(groups=SimpleNamespace(topic=TOPIC, partitions=partitions))
    return asyncio.run(handler(service, pb.ListGroupsRequest(), None))


def loaded_with(*group_ids: str) -> GroupCoordinator:
    coordinator = GroupCoordinator()
    for g in group_ids:
        coordinator.reset_offsets(g, {TopicPartition("t", 0): 5}, timestamp_ms=0)
    return coordinator


def test_a_loading_partition_makes_the_listing_retriable_with_the_groups_loaded_so_far() -> None:
    partitions: dict[int, LoadedPartition[Any]] = {
        0: LoadedPartition(0, part=None, leader_epoch=3, coordinator=loaded_with("billing", "audit")),  # type: ignore[arg-type]
        5: LoadedPartition(5, part=None, leader_epoch=3),  # type: ignore[arg-type]  # still loading
    }
    answer = list_groups(partitions)
    assert pb.ErrorCode.Name(answer.status.error_code) == "COORDINATOR_LOAD_IN_PROGRESS"
    assert f"{TOPIC}-5" in answer.status.error_message and f"{TOPIC}-0" not in answer.status.error_message
    assert sorted(g.group_id for g in answer.groups) == ["audit", "billing"]

    partitions[5].coordinator = loaded_with("orders")  # the load finished
    answer = list_groups(partitions)
    assert pb.ErrorCode.Name(answer.status.error_code) == "NONE" and not answer.status.error_message
    assert sorted(g.group_id for g in answer.groups) == ["audit", "billing", "orders"]
