"""Producer error paths against a tiny in-test fake broker (gRPC on a free port).

The fake answers Metadata with itself as the only broker and follows a script
for Produce (error codes, or a gRPC abort), so each retry rule can be checked
exactly: what is retried, what fails with which typed error, how often
metadata is refreshed. Happy paths and real behaviour are in
test_client_integration.py against a real node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

import ketch
import ketch.aio
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import (
    ErrorCode,
    KetchConnectionError,
    KetchError,
    MessageTooLargeError,
    NotEnoughReplicasError,
    UnknownTopicOrPartitionError,
)
from ketch.recordbatch import split_batches


class FakeBroker(ketch_pb2_grpc.KetchServicer):
    def __init__(self) -> None:
        self.port = 0
        self.topics = {"t": 2}
        self.script: list[int | str] = []  # per Produce call: an error code, "abort" or "slow"
        self.next_offset: dict[tuple[str, int], int] = {}
        self.metadata_calls = 0
        self.produce_calls = 0
        self.batches_per_call: list[int] = []
        self.init_producer_id_calls = 0
        self.stamps: list[tuple[int, int, int, int]] = []  # (partition, producer id, epoch, base sequence)

    async def InitProducerId(self, request: pb.InitProducerIdRequest, context: Any) -> pb.InitProducerIdResponse:
        self.init_producer_id_calls += 1
        return pb.InitProducerIdResponse(producer_id=1000 + self.init_producer_id_calls, producer_epoch=0)

    async def Metadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        self.metadata_calls += 1
        resp = pb.MetadataResponse(cluster_id="fake", controller_id=1)
        resp.brokers.add(node_id=1, host="127.0.0.1", port=self.port)
        for name in request.topics or list(self.topics):
            if name not in self.topics:
                resp.topics.add(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, error_message="no such")
                continue
            t = resp.topics.add(name=name, topic_id="id-" + name)
            for p in range(self.topics[name]):
                t.partitions.add(partition=p, leader_id=1, leader_epoch=0, replicas=[1], isr=[1])
        return resp

    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        self.produce_calls += 1
        action = self.script.pop(0) if self.script else 0
        if action == "abort":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9999 vs. 100)")
        if action == "slow":  # hold the only in-flight slot so the next batches pile up
            await asyncio.sleep(0.2)
            action = 0
        resp = pb.ProduceResponse()
        self.batches_per_call.append(sum(len(split_batches(p.records)) for p in request.partitions))
        for item in request.partitions:
            key = (item.topic, item.partition)
            if action:
                resp.partitions.add(
                    topic=item.topic, partition=item.partition, error_code=int(action), error_message="scripted"
                )
                continue
            headers = [h for h, _ in split_batches(item.records)]
            self.stamps += [(item.partition, h.producer_id, h.producer_epoch, h.base_sequence) for h in headers]
            count = sum(h.records_count for h in headers)
            base = self.next_offset.get(key, 0)
            self.next_offset[key] = base + count
            resp.partitions.add(topic=item.topic, partition=item.partition, base_offset=base)
        return resp


@asynccontextmanager
async def fake_broker(max_receive: int | None = None) -> AsyncIterator[FakeBroker]:
    options = [("grpc.max_receive_message_length", max_receive)] if max_receive else []
    server = grpc.aio.server(options=options)
    fake = FakeBroker()
    ketch_pb2_grpc.add_KetchServicer_to_server(fake, server)
    fake.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake
    finally:
        await server.stop(None)


def run(test: Callable[[FakeBroker], Awaitable[None]], max_receive: int | None = None) -> None:
    async def main() -> None:
        async with fake_broker(max_receive) as fake:
            await asyncio.wait_for(test(fake), 20)

    asyncio.run(main())


def producer(fake: FakeBroker, **kw: Any) -> ketch.aio.Producer:
    kw.setdefault("retry_backoff_ms", 10)
    return ketch.aio.Producer(f"127.0.0.1:{fake.port}", **kw)


def test_retriable_errors_are_retried_with_a_metadata_refresh() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.NOT_LEADER_OR_FOLLOWER]
        async with producer(fake) as p:
            futures = [await p.send("t", b"v%d" % i, partition=0) for i in range(5)]
            metas = [await f for f in futures]
        assert [m.offset for m in metas] == [0, 1, 2, 3, 4]
        assert fake.produce_calls == 3
        assert fake.metadata_calls >= 2  # the first lookup, then at least one refresh

    run(body)


@pytest.mark.parametrize(
    ("code", "error"),
    [(ErrorCode.MESSAGE_TOO_LARGE, MessageTooLargeError), (ErrorCode.INVALID_RECORD, KetchError)],
)
def test_non_retriable_errors_fail_at_once(code: ErrorCode, error: type[KetchError]) -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [code]
        async with producer(fake) as p:
            fut = await p.send("t", b"v", partition=1)
            with pytest.raises(error) as info:
                await fut
        assert info.value.code == code and "scripted" in str(info.value)
        assert fake.produce_calls == 1

    run(body)


def test_retries_stop_at_the_delivery_timeout() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [ErrorCode.NOT_ENOUGH_REPLICAS] * 1000
        started = time.monotonic()
        async with producer(fake, delivery_timeout_ms=400) as p:
            with pytest.raises(NotEnoughReplicasError):
                await p.send_and_wait("t", b"v", partition=0)
        assert 0.2 < time.monotonic() - started < 2
        assert fake.produce_calls > 3  # it did retry, with backoff

    run(body)


def test_retries_zero_means_no_retry() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [ErrorCode.NOT_ENOUGH_REPLICAS]
        async with producer(fake, retries=0) as p:
            with pytest.raises(NotEnoughReplicasError):
                await p.send_and_wait("t", b"v", partition=0)
        assert fake.produce_calls == 1

    run(body)


def test_a_failed_batch_with_no_retries_left_still_refreshes_metadata() -> None:
    """With retries=0 a NOT_LEADER_OR_FOLLOWER fails the batch, and the producer must still
    look up the new leader: otherwise every later batch goes to the old one (found by the
    chaos suite: retries=0 producers kept sending to a stopped leader until it came back)."""

    async def body(fake: FakeBroker) -> None:
        fake.script = [ErrorCode.NOT_LEADER_OR_FOLLOWER]
        async with producer(fake, retries=0) as p:
            with pytest.raises(KetchError) as info:
                await p.send_and_wait("t", b"v", partition=0)
            assert info.value.code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            before = fake.metadata_calls
            deadline = time.monotonic() + 2
            while fake.metadata_calls == before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert fake.metadata_calls > before
        assert fake.produce_calls == 1

    run(body)


def test_unknown_topic_fails_without_producing() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake, max_block_ms=300) as p:
            with pytest.raises(UnknownTopicOrPartitionError, match="no such"):
                await p.send_and_wait("missing", b"v")
            started = time.monotonic()
            with pytest.raises(UnknownTopicOrPartitionError, match=r"partitions 0\.\.1"):
                await p.send_and_wait("t", b"v", partition=7)  # waited for in metadata until max_block_ms
            assert 0.25 < time.monotonic() - started < 5
        assert fake.produce_calls == 0

    run(body)


def test_record_over_max_request_size_fails_immediately() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake, max_request_size=1000) as p:
            fut = await p.send("t", b"x" * 2000)
            assert fut.done()
            with pytest.raises(MessageTooLargeError, match="max_request_size 1000"):
                await fut
        assert fake.produce_calls == 0

    run(body)


def test_resource_exhausted_becomes_message_too_large_with_grpc_details() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake) as p:
            with pytest.raises(MessageTooLargeError) as info:
                await p.send_and_wait("t", b"x" * 5000, partition=0)
        assert "RESOURCE_EXHAUSTED" not in type(info.value).__name__
        assert "larger than max" in str(info.value) and "1000" in str(info.value)

    run(body, max_receive=1000)  # gRPC itself refuses the message and names its limit


def test_too_large_multi_batch_request_is_resent_one_batch_per_request() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = ["slow", "abort"]
        plain = {"enable_idempotence": False}  # several batches of a partition in one request
        async with producer(fake, batch_size=200, max_in_flight_requests_per_connection=1, **plain) as p:
            futures = [await p.send("t", b"y" * 100, partition=0) for _ in range(6)]
            await p.flush()
            metas = [await f for f in futures]
        assert [m.offset for m in metas] == list(range(6))
        # call 1 (slow) took one batch, call 2 (refused) the rest, then one batch per call
        assert fake.produce_calls >= 6 and set(fake.batches_per_call) == {1}

    run(body)


def test_acks_zero_completes_with_offset_minus_one() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake, acks=0) as p:
            metas = [await (await p.send("t", b"v", partition=1)) for _ in range(3)]
        assert [(m.partition, m.offset) for m in metas] == [(1, -1)] * 3

    run(body)


def test_many_batches_in_one_request_get_contiguous_offsets() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.next_offset[("t", 0)] = 100
        fake.script = ["slow"]
        plain = {"enable_idempotence": False}
        async with producer(fake, batch_size=300, max_in_flight_requests_per_connection=1, **plain) as p:
            futures = [await p.send("t", b"z" * 50, partition=0) for _ in range(20)]
            await p.flush()
            metas = [await f for f in futures]
        assert [m.offset for m in metas] == list(range(100, 120))
        assert fake.produce_calls == 2 and fake.batches_per_call[0] == 1 and fake.batches_per_call[1] >= 3

    run(body)


def test_no_broker_answering_is_a_connection_error() -> None:
    async def body(fake: FakeBroker) -> None:
        async with ketch.aio.Producer("127.0.0.1:1", request_timeout_ms=2000) as p:
            with pytest.raises(KetchConnectionError, match=r"127\.0\.0\.1:1"):
                await p.send_and_wait("t", b"v")

    run(body)


def test_sync_producer_reports_the_same_typed_errors() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [ErrorCode.MESSAGE_TOO_LARGE]

        def use_sync() -> None:
            with ketch.Producer(f"127.0.0.1:{fake.port}", retry_backoff_ms=10) as p:
                with pytest.raises(MessageTooLargeError):
                    p.send("t", b"v", partition=0).get(5)
                assert p.send("t", b"w", partition=0).get(5).offset == 0
                with pytest.raises(UnknownTopicOrPartitionError):
                    p.send("missing", b"v").get(5)

        await asyncio.to_thread(use_sync)

    run(body)


# -- idempotence --


def test_idempotent_batches_carry_the_producer_id_and_consecutive_sequences() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake, batch_size=200) as p:
            futures = [await p.send("t", b"y" * 60, partition=0) for _ in range(12)]
            await p.flush()
            metas = [await f for f in futures]
        assert [m.offset for m in metas] == list(range(12))
        assert fake.init_producer_id_calls == 1 and set(fake.batches_per_call) == {1}
        assert {(pid, epoch) for _, pid, epoch, _ in fake.stamps} == {(1001, 0)}
        sequences = [seq for _, _, _, seq in fake.stamps]
        assert sequences[0] == 0 and sequences == sorted(sequences) and len(set(sequences)) == len(sequences)

    run(body)


def test_out_of_order_sequence_at_the_head_bumps_the_epoch_and_restarts_at_zero() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [0, int(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)]
        async with producer(fake, max_in_flight_requests_per_connection=1) as p:
            first = await p.send_and_wait("t", b"a", partition=0)
            second = await p.send_and_wait("t", b"b", partition=0)
        assert (first.offset, second.offset) == (0, 1)
        # the refused attempt carried (1001, 0, 1); the fake records stored batches only
        assert fake.produce_calls == 3
        assert [s[1:] for s in fake.stamps] == [(1001, 0, 0), (1001, 1, 0)]

    run(body)


def test_producer_fenced_fails_the_batch() -> None:
    async def body(fake: FakeBroker) -> None:
        fake.script = [int(ErrorCode.PRODUCER_FENCED)]
        async with producer(fake) as p:
            with pytest.raises(KetchError) as err:
                await p.send_and_wait("t", b"a", partition=0)
        assert err.value.code == ErrorCode.PRODUCER_FENCED

    run(body)


def test_idempotence_settings_follow_kip_679() -> None:
    from ketch.idempotence import idempotence_enabled

    assert idempotence_enabled(None, -1, 5, 5)
    assert not idempotence_enabled(None, 1, 5, 5)  # acks=1 alone turns it off quietly
    assert not idempotence_enabled(None, -1, 5, 6)
    assert not idempotence_enabled(False, -1, 5, 5)
    with pytest.raises(ValueError, match="acks=0"):
        ketch.aio.Producer(acks=0, enable_idempotence=True)
    with pytest.raises(ValueError, match="max_in_flight_requests_per_connection=6"):
        ketch.aio.Producer(max_in_flight_requests_per_connection=6, enable_idempotence=True)
    with pytest.raises(ValueError, match="retries=0"):
        ketch.aio.Producer(retries=0, enable_idempotence=True)
    assert not ketch.aio.Producer(acks=1).enable_idempotence
    assert ketch.aio.Producer().enable_idempotence
