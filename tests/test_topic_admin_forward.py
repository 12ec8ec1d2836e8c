"""node/topic_admin.py forwarding: a change the controller committed but this broker's image has not
reached in time is REQUEST_TIMED_OUT per topic (the status alone never reaches the client)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from ketch.api.v1 import controller_pb2 as cpb
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.topic_admin import TopicAdmin


class _Controllers:
    def __init__(self, answer: cpb.ControllerTopicsResponse) -> None:
        self.answer = answer

    async def call(self, pick: Any, request: Any) -> cpb.ControllerTopicsResponse:
        return self.answer


class _Follower:
    def __init__(self, reaches: bool) -> None:
        self.reaches = reaches

    async def wait_for(self, offset: int, timeout_s: float) -> bool:
        return self.reaches


def _delete(reaches: bool) -> pb.DeleteTopicsResponse:
    answer = cpb.ControllerTopicsResponse(status=cpb.ControllerStatus(metadata_offset=10))
    answer.topics.add(name="a", error_code=ErrorCode.NONE)
    answer.topics.add(name="b", error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, error_message="no such topic")
    admin = TopicAdmin(cast(Any, None), cast(Any, _Controllers(answer)), cast(Any, _Follower(reaches)))
    return asyncio.run(admin.delete(pb.DeleteTopicsRequest(names=["a", "b"])))


def test_a_change_this_broker_cannot_see_yet_is_request_timed_out_per_topic() -> None:
    late = _delete(reaches=False)
    assert [(t.name, t.error_code) for t in late.topics] == [
        ("a", ErrorCode.REQUEST_TIMED_OUT),
        ("b", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert "metadata offset 10" in late.topics[0].error_message
    seen = _delete(reaches=True)
    assert [t.error_code for t in seen.topics] == [ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
