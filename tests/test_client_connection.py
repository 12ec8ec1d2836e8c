"""Bootstrap parsing, transport error mapping and the metadata cache."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ketch.aio.connection import Connection, parse_bootstrap, translate_rpc_error
from ketch.errors import (
    ErrorCode,
    InvalidRequestError,
    KetchConnectionError,
    MessageTooLargeError,
)
from tests.test_client_errors import fake_broker


def test_parse_bootstrap_string_and_list() -> None:
    assert parse_bootstrap("a:1, b:2,") == [("a", 1), ("b", 2)]
    assert parse_bootstrap(["[::1]:9092", "h:3"]) == [("::1", 9092), ("h", 3)]
    for bad in ("", "nohost", "h:x", ":5"):
        with pytest.raises(ValueError):
            parse_bootstrap(bad)


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_transport_errors_become_typed_errors() -> None:
    too_big = translate_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max (5 vs. 4)"), "b1")
    assert isinstance(too_big, MessageTooLargeError) and "(5 vs. 4)" in str(too_big) and "b1" in str(too_big)
    down = translate_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert isinstance(down, KetchConnectionError) and down.retriable and "UNAVAILABLE" in str(down)
    late = translate_rpc_error(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"))
    assert isinstance(late, KetchConnectionError) and late.retriable
    assert isinstance(translate_rpc_error(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "x")), InvalidRequestError)
    assert translate_rpc_error(rpc_error(grpc.StatusCode.UNIMPLEMENTED, "x")).code == ErrorCode.UNSUPPORTED_VERSION


def test_metadata_cache_follows_brokers_and_merges_tracked_topics() -> None:
    async def main() -> None:
        async with fake_broker() as fake:
            fake.topics = {"a": 2, "b": 1}
            # the first bootstrap address is dead: the client moves on to the next
            conn = Connection(f"127.0.0.1:1,127.0.0.1:{fake.port}", request_timeout_ms=2000)
            try:
                conn.track(["a"])
                cluster = await conn.refresh()
                assert set(cluster.topics) == {"a"} and cluster.topics["a"].num_partitions == 2
                assert cluster.leader("a", 1) == 1 and cluster.leader("a", 5) == -1
                assert conn.address(1) == ("127.0.0.1", fake.port)
                assert conn.candidates()[0] == ("127.0.0.1", fake.port)  # known brokers first
                conn.track(["b", "zzz"])
                calls = fake.metadata_calls
                both = await asyncio.gather(conn.refresh(), conn.refresh())
                assert both[0] is both[1] and fake.metadata_calls == calls + 1  # single flight
                topics = conn.cluster.topics
                assert topics["b"].tps[0] == ("b", 0) and topics["zzz"].error_code == 3
                assert set(topics) == {"a", "b", "zzz"}
            finally:
                await conn.close()

    asyncio.run(main())


def test_no_answer_names_every_address() -> None:
    async def main() -> None:
        conn = Connection("127.0.0.1:1,127.0.0.1:2", request_timeout_ms=1000)
        try:
            with pytest.raises(KetchConnectionError, match=r"127\.0\.0\.1:1.*127\.0\.0\.1:2"):
                await conn.refresh()
        finally:
            await conn.close()

    asyncio.run(main())
