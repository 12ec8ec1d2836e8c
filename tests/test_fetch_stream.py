"""node/fetch_stream.py: a follower's fetches to one leader over one FetchStream call, against
real gRPC servers in this process (a leader with FetchStream, one without, one that stops)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from node.fetch_stream import LeaderFetches


class StreamingLeader(ketch_pb2_grpc.KetchServicer):
    """Answers each request after ``max_wait_ms`` with ``session_id`` = its ``max_wait_ms``."""

    def __init__(self) -> None:
        self.calls = 0

    async def FetchStream(self, requests: AsyncIterator[pb.FetchRequest], context: Any) -> Any:
        self.calls += 1
        async for request in requests:
            await asyncio.sleep(request.max_wait_ms / 1000)
            yield pb.FetchResponse(session_id=request.max_wait_ms)


class OlderLeader(ketch_pb2_grpc.KetchServicer):
    """Unary Fetch only (FetchStream is the generated UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.calls = 0

    async def Fetch(self, request: pb.FetchRequest, context: Any) -> pb.FetchResponse:
        self.calls += 1
        return pb.FetchResponse(session_id=request.max_wait_ms)


@contextlib.asynccontextmanager
async def _fetching_from(
    servicer: ketch_pb2_grpc.KetchServicer,
) -> AsyncIterator[tuple[grpc.aio.Server, int, LeaderFetches]]:
    """A real server of ``servicer`` on a free port, the port, and a follower's ``LeaderFetches`` to
    it; both ended after."""
    server = grpc.aio.server()
    ketch_pb2_grpc.add_KetchServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    fetches = LeaderFetches(ketch_pb2_grpc.KetchStub(channel), 1)
    try:
        yield server, port, fetches
    finally:
        fetches.close()
        await channel.close()
        await server.stop(0)


def _ask(wait_ms: int) -> pb.FetchRequest:
    return pb.FetchRequest(max_wait_ms=wait_ms)


def test_rounds_are_messages_of_one_call_answered_in_order() -> None:
    async def scenario() -> None:
        leader = StreamingLeader()
        async with _fetching_from(leader) as (_, _, fetches):
            answers = [(await fetches.exchange(_ask(wait), 5)).session_id for wait in (3, 1, 2, 0)]
            assert answers == [3, 1, 2, 0]
            assert leader.calls == 1 and not fetches.unary

    asyncio.run(scenario())


def test_a_leader_without_fetch_stream_is_fetched_from_with_unary_calls() -> None:
    async def scenario() -> None:
        leader = OlderLeader()
        async with _fetching_from(leader) as (_, _, fetches):
            assert (await fetches.exchange(_ask(4), 5)).session_id == 4
            assert (await fetches.exchange(_ask(5), 5)).session_id == 5
            assert fetches.unary and leader.calls == 2

    asyncio.run(scenario())


def test_a_leader_upgraded_in_place_is_streamed_from_again() -> None:
    """Rule 4's way back: the older leader stops (the unary call fails UNAVAILABLE), an upgraded one
    starts on the same port, and the next exchanges go over one FetchStream call."""

    async def scenario() -> None:
        older, upgraded = OlderLeader(), StreamingLeader()
        async with _fetching_from(older) as (server, port, fetches):
            assert (await fetches.exchange(_ask(1), 5)).session_id == 1 and fetches.unary
            await server.stop(0)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await fetches.exchange(_ask(2), 5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and not fetches.unary
            restarted = grpc.aio.server()
            ketch_pb2_grpc.add_KetchServicer_to_server(upgraded, restarted)
            assert restarted.add_insecure_port(f"127.0.0.1:{port}") == port
            await restarted.start()
            try:
                answers = []
                for _ in range(100):  # until the channel has reconnected (its backoff)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        answers.append((await fetches.exchange(_ask(3), 5)).session_id)
                    if answers:
                        break
                    await asyncio.sleep(0.1)
                assert answers == [3]
                assert (await fetches.exchange(_ask(4), 5)).session_id == 4
                assert upgraded.calls == 1 and not fetches.unary and older.calls == 1
            finally:
                await restarted.stop(0)  # the follower's call and channel end with the context

    asyncio.run(scenario())


def test_a_cut_short_or_late_exchange_ends_its_call_and_the_next_opens_another() -> None:
    async def scenario() -> None:
        leader = StreamingLeader()
        async with _fetching_from(leader) as (_, _, fetches):
            parked = asyncio.create_task(fetches.exchange(_ask(5000), 10))
            await asyncio.sleep(0.2)
            fetches.cut_short()
            with pytest.raises(asyncio.CancelledError):
                await parked
            assert fetches.was_cut_short
            assert (await fetches.exchange(_ask(1), 5)).session_id == 1  # a new call
            assert not fetches.was_cut_short
            with pytest.raises(TimeoutError):
                await fetches.exchange(_ask(5000), 0.2)
            assert (await fetches.exchange(_ask(2), 5)).session_id == 2
            assert leader.calls == 3

    asyncio.run(scenario())


def test_a_leader_gone_between_exchanges_is_reported_unavailable() -> None:
    """The idle call's write fails (gRPC: INTERNAL) unless gRPC saw the call end first (a race: ten
    tries); the exchange tries a new call, whose error is UNAVAILABLE, the code a follower reports
    to the controller (node/replica_fetcher.py)."""

    async def scenario() -> None:
        async with _fetching_from(StreamingLeader()) as (server, _, fetches):
            await fetches.exchange(_ask(0), 5)
            await server.stop(0)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await fetches.exchange(_ask(0), 5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE

    for _ in range(10):
        asyncio.run(scenario())
