"""A real node process over a real gRPC channel: bad input is refused and changes nothing.

Each case sends a request a client could send by mistake (or on purpose),
checks the typed error and its message, then checks the node still serves
and that no stored data changed.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode
from node.process import NodeProcess
from tests.batches import make_batch, values
from tests.harness import start_node, wait_broker_alive


@pytest.fixture
def stub(node: NodeProcess) -> Iterator[ketch_pb2_grpc.KetchStub]:
    channel = grpc.insecure_channel(node.bootstrap, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = ketch_pb2_grpc.KetchStub(channel)
    created = stub.CreateTopics(
        pb.CreateTopicsRequest(
            topics=[
                pb.NewTopic(name="t", num_partitions=2, replication_factor=1, configs={"max.message.bytes": "4096"})
            ]
        )
    )
    assert created.topics[0].error_code == 0, created
    yield stub
    channel.close()


def produce(
    stub: ketch_pb2_grpc.KetchStub, records: bytes, topic: str = "t", partition: int = 0, acks: int = 1
) -> pb.PartitionProduceResult:
    response = stub.Produce(
        pb.ProduceRequest(
            acks=acks, partitions=[pb.PartitionRecords(topic=topic, partition=partition, records=records)]
        )
    )
    result: pb.PartitionProduceResult = response.partitions[0]
    return result


def fetch(
    stub: ketch_pb2_grpc.KetchStub,
    offset: int = 0,
    partition: int = 0,
    topic: str = "t",
    max_wait_ms: int = 0,
) -> pb.FetchPartitionResult:
    response = stub.Fetch(
        pb.FetchRequest(
            max_wait_ms=max_wait_ms,
            min_bytes=1,
            max_bytes=1 << 20,
            partitions=[pb.FetchPartition(topic=topic, partition=partition, fetch_offset=offset)],
        )
    )
    result: pb.FetchPartitionResult = response.partitions[0]
    return result


def stored(stub: ketch_pb2_grpc.KetchStub) -> list[tuple[int, bytes | None]]:
    return values(fetch(stub).records)


def test_produce_then_fetch_round_trip_with_assigned_offsets(stub: ketch_pb2_grpc.KetchStub) -> None:
    assert produce(stub, make_batch(0, 3, tag="a")).base_offset == 0
    # Whatever base offset the client wrote is replaced by the leader's.
    assert produce(stub, make_batch(777, 2, tag="b")).base_offset == 3
    assert stored(stub) == [(0, b"a:0"), (1, b"a:1"), (2, b"a:2"), (3, b"b:0"), (4, b"b:1")]
    result = fetch(stub, offset=4)
    assert result.high_watermark == 5
    assert values(result.records)[-1] == (4, b"b:1")


def test_bad_input_is_refused_with_a_typed_error_and_stores_nothing(stub: ketch_pb2_grpc.KetchStub) -> None:
    produce(stub, make_batch(0, 2, tag="keep"))
    before = stored(stub)
    corrupt = bytearray(make_batch(0, 2))
    corrupt[-3] ^= 0x40
    cases: list[tuple[Callable[[], Any], ErrorCode, str]] = [
        (lambda: produce(stub, bytes(corrupt)), ErrorCode.CORRUPT_MESSAGE, "CRC-32C"),
        (lambda: produce(stub, make_batch(0, 1) + bytes(corrupt)), ErrorCode.CORRUPT_MESSAGE, "CRC-32C"),
        (lambda: produce(stub, b"\x00" * 10), ErrorCode.CORRUPT_MESSAGE, "truncated"),
        (
            lambda: produce(stub, make_batch(0, 1, pad=5000)),
            ErrorCode.MESSAGE_TOO_LARGE,
            "max.message.bytes=4096",
        ),
        (
            lambda: produce(stub, make_batch(0, 1), topic="missing"),
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            "missing",
        ),
        (
            lambda: produce(stub, make_batch(0, 1), partition=9),
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            "partition 9",
        ),
        (
            lambda: produce(stub, make_batch(0, 1), topic="bad/name"),
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            "A-Za-z",
        ),
        (lambda: produce(stub, make_batch(0, 1), topic="x" * 250), ErrorCode.INVALID_TOPIC_EXCEPTION, "249"),
        (lambda: produce(stub, make_batch(0, 1), acks=5), ErrorCode.INVALID_REQUIRED_ACKS, "acks=5"),
        (lambda: fetch(stub, offset=99), ErrorCode.OFFSET_OUT_OF_RANGE, "[0, 2]"),
        (lambda: fetch(stub, offset=-1), ErrorCode.OFFSET_OUT_OF_RANGE, "outside"),
        (lambda: fetch(stub, topic="missing"), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "missing"),
    ]
    for call, code, fragment in cases:
        result = call()
        assert result.error_code == code, (code, result)
        assert fragment in result.error_message, (fragment, result.error_message)
        assert stored(stub) == before
    assert produce(stub, make_batch(0, 1, tag="after")).base_offset == 2


def test_a_keyless_record_to_a_compacted_topic_is_invalid_record_and_stores_nothing(
    stub: ketch_pb2_grpc.KetchStub,
) -> None:
    created = stub.CreateTopics(
        pb.CreateTopicsRequest(
            topics=[
                pb.NewTopic(name="c", num_partitions=1, replication_factor=1, configs={"cleanup.policy": "compact"})
            ]
        )
    )
    assert created.topics[0].error_code == 0, created
    assert produce(stub, make_batch(0, 2, tag="k", keyed=True), topic="c").base_offset == 0
    for records in (make_batch(0, 1), make_batch(0, 1, tag="ok", keyed=True) + make_batch(0, 3)):
        refused = produce(stub, records, topic="c")
        assert refused.error_code == ErrorCode.INVALID_RECORD, refused
        assert "c-0 is compacted" in refused.error_message and "offset delta 0" in refused.error_message
        assert values(fetch(stub, topic="c").records) == [(0, b"k:0"), (1, b"k:1")]
    assert produce(stub, make_batch(0, 1, tag="k2", keyed=True), topic="c").base_offset == 2
    assert produce(stub, make_batch(0, 1)).error_code == 0  # a delete topic takes keyless records


def test_one_bad_partition_does_not_fail_the_others(stub: ketch_pb2_grpc.KetchStub) -> None:
    response = stub.Produce(
        pb.ProduceRequest(
            acks=1,
            partitions=[
                pb.PartitionRecords(topic="t", partition=0, records=make_batch(0, 1)),
                pb.PartitionRecords(topic="nope", partition=0, records=make_batch(0, 1)),
                pb.PartitionRecords(topic="t", partition=1, records=make_batch(0, 2)),
            ],
        )
    )
    assert [p.error_code for p in response.partitions] == [0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, 0]
    assert [p.base_offset for p in response.partitions] == [0, -1, 0]


def test_min_insync_replicas_above_the_isr_refuses_acks_all(stub: ketch_pb2_grpc.KetchStub) -> None:
    stub.CreateTopics(
        pb.CreateTopicsRequest(
            topics=[
                pb.NewTopic(name="safe", num_partitions=1, replication_factor=1, configs={"min.insync.replicas": "2"})
            ]
        )
    )
    refused = produce(stub, make_batch(0, 1), topic="safe", acks=-1)
    assert refused.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert "min.insync.replicas is 2" in refused.error_message
    assert produce(stub, make_batch(0, 1), topic="safe", acks=1).error_code == 0


def test_admin_errors_are_typed(stub: ketch_pb2_grpc.KetchStub) -> None:
    response = stub.CreateTopics(
        pb.CreateTopicsRequest(
            topics=[
                pb.NewTopic(name="t", num_partitions=1, replication_factor=1),
                pb.NewTopic(name="..", num_partitions=1, replication_factor=1),
                pb.NewTopic(name="r3", num_partitions=1, replication_factor=3),
                pb.NewTopic(name="cfg", num_partitions=1, replication_factor=1, configs={"retention.ms": "x"}),
            ]
        )
    )
    assert [t.error_code for t in response.topics] == [
        ErrorCode.TOPIC_ALREADY_EXISTS,
        ErrorCode.INVALID_TOPIC_EXCEPTION,
        ErrorCode.INVALID_REPLICATION_FACTOR,
        ErrorCode.INVALID_CONFIG,
    ]
    deleted = stub.DeleteTopics(pb.DeleteTopicsRequest(names=["nope"]))
    assert deleted.topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert [t.name for t in stub.Metadata(pb.MetadataRequest()).topics] == ["t"]


def test_message_over_the_grpc_limit_names_the_limit(tmp_path: Path) -> None:
    node = start_node(tmp_path, extra_args=["--max-request-bytes", "2000000"])
    try:
        channel = grpc.insecure_channel(node.bootstrap, options=[("grpc.max_send_message_length", 64 << 20)])
        stub = ketch_pb2_grpc.KetchStub(channel)
        stub.CreateTopics(
            pb.CreateTopicsRequest(topics=[pb.NewTopic(name="t", num_partitions=1, replication_factor=1)])
        )
        with pytest.raises(grpc.RpcError) as err:
            produce(stub, b"\x00" * 3_000_000)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2000000" in (err.value.details() or "")
        assert produce(stub, make_batch(0, 1)).base_offset == 0  # still serving
        channel.close()
    finally:
        node.close()


def test_long_poll_fetch_wakes_on_append(stub: ketch_pb2_grpc.KetchStub) -> None:
    results: list[pb.FetchPartitionResult] = []
    waiter = threading.Thread(target=lambda: results.append(fetch(stub, offset=0, max_wait_ms=10_000)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    assert not results  # parked: nothing to read yet
    produce(stub, make_batch(0, 1, tag="wake"))
    waiter.join(10)
    assert values(results[0].records) == [(0, b"wake:0")]
    assert time.monotonic() - started < 5


def test_a_long_poll_rereads_the_woken_partitions_in_place_until_min_bytes(stub: ketch_pb2_grpc.KetchStub) -> None:
    """Each append wakes the parked fetch, which reads that partition again into the same answer
    (replacing what it held there) until the answer reaches min_bytes; the order is the request's."""
    batch = len(make_batch(0, 1, tag="a"))
    request = pb.FetchRequest(
        max_wait_ms=10_000,
        min_bytes=3 * batch - 1,
        max_bytes=1 << 20,
        partitions=[pb.FetchPartition(topic="t", partition=p, fetch_offset=0) for p in (0, 1)],
    )
    answers: list[pb.FetchResponse] = []
    waiter = threading.Thread(target=lambda: answers.append(stub.Fetch(request)))
    waiter.start()
    for partition, tag in ((1, "a"), (1, "b"), (0, "c")):
        time.sleep(0.3)
        assert not answers  # still parked: fewer than min_bytes so far
        assert produce(stub, make_batch(0, 1, tag=tag), partition=partition).error_code == 0
    waiter.join(10)
    results = answers[0].partitions
    assert [(r.partition, r.error_code) for r in results] == [(0, 0), (1, 0)]
    assert values(results[0].records) == [(0, b"c:0")]
    assert values(results[1].records) == [(0, b"a:0"), (1, b"b:0")]
    assert [r.high_watermark for r in results] == [1, 2]


def test_bytes_out_counts_the_record_bytes_each_fetch_answer_carries(
    node: NodeProcess, stub: ketch_pb2_grpc.KetchStub
) -> None:
    def bytes_out() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
        lines = [x for x in text.splitlines() if x.startswith('ketch_broker_topic_bytes_out_total{topic="t"}')]
        return float(lines[0].split()[1]) if lines else 0.0

    for partition in (0, 1):
        assert produce(stub, make_batch(0, 3, tag=f"p{partition}"), partition=partition).error_code == 0
    before = bytes_out()
    response = stub.Fetch(
        pb.FetchRequest(
            min_bytes=1,
            max_bytes=1 << 20,
            partitions=[pb.FetchPartition(topic="t", partition=p, fetch_offset=0) for p in (0, 1)]
            + [pb.FetchPartition(topic="t", partition=0, fetch_offset=3)],  # at the end: no bytes
        )
    )
    carried = sum(len(r.records) for r in response.partitions)
    assert carried > 0 and len(response.partitions[2].records) == 0
    assert bytes_out() - before == carried


def test_sigterm_finishes_in_flight_fetch_and_exits_cleanly(node: NodeProcess, stub: ketch_pb2_grpc.KetchStub) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(node.bootstrap))
    check = health.Check(health_pb2.HealthCheckRequest(service="ketch.v1.Ketch"))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    assert "ketch_log_end_offset" in metrics and "ketch_request_latency_seconds_bucket" in metrics
    results: list[pb.FetchPartitionResult] = []
    waiter = threading.Thread(target=lambda: results.append(fetch(stub, offset=0, max_wait_ms=15_000)))
    waiter.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert node.stop() == 0
    waiter.join(5)
    # Answered, not cut off: with data (NONE), or — as controlled shutdown moved leadership
    # away first, and a lone replica has nowhere to move it — a retriable leadership error.
    assert results, "the in-flight fetch got no answer"
    assert results[0].error_code in (0, ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.NOT_LEADER_OR_FOLLOWER)
    assert time.monotonic() - started < 10


def test_data_survives_restart_and_a_second_node_on_the_same_dir_is_refused(
    node: NodeProcess, stub: ketch_pb2_grpc.KetchStub, tmp_path: Path
) -> None:
    produce(stub, make_batch(0, 3, tag="kept"))
    second = NodeProcess(node.data_dir, node_id=1)
    with pytest.raises(RuntimeError, match="did not become ready"):
        second.start(timeout_s=15)
    assert "is another node using it" in second.log_text()
    node.restart()
    wait_broker_alive(node)
    channel = grpc.insecure_channel(node.bootstrap)
    stub = ketch_pb2_grpc.KetchStub(channel)
    deadline = time.monotonic() + 15
    while (result := fetch(stub)).error_code and time.monotonic() < deadline:
        time.sleep(0.05)  # leadership is re-elected once the restarted broker is unfenced
    assert values(result.records) == [(0, b"kept:0"), (1, b"kept:1"), (2, b"kept:2")]
    channel.close()


def test_retention_by_time_moves_the_log_start(tmp_path: Path) -> None:
    """retention.ms trims topics whose cleanup.policy has delete (also compact,delete), never a
    compact-only one (Kafka's rule: its cleaner keeps each key's latest record instead)."""
    node = start_node(tmp_path, extra_args=["--retention-check-interval-ms", "100"])
    try:
        channel = grpc.insecure_channel(node.bootstrap)
        stub = ketch_pb2_grpc.KetchStub(channel)
        policies = {"r": "delete", "rc": "compact", "rcd": "compact,delete"}
        stub.CreateTopics(
            pb.CreateTopicsRequest(
                topics=[
                    pb.NewTopic(
                        name=name,
                        num_partitions=1,
                        replication_factor=1,
                        configs={"retention.ms": "60000", "cleanup.policy": policy},
                    )
                    for name, policy in policies.items()
                ]
            )
        )
        old, fresh = 1_000, int(time.time() * 1000)
        for name in policies:
            assert produce(stub, make_batch(0, 3, timestamp_ms=old, keyed=True), topic=name).error_code == 0
            assert (
                produce(stub, make_batch(0, 2, timestamp_ms=fresh, tag="new", keyed=True), topic=name).error_code == 0
            )

        def earliest(topic: str) -> int:
            request = pb.ListOffsetsRequest(
                partitions=[pb.ListOffsetsPartition(topic=topic, partition=0, timestamp=-2)]
            )
            return int(stub.ListOffsets(request).partitions[0].offset)

        deadline = time.monotonic() + 10
        while (earliest("r"), earliest("rcd")) != (3, 3) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (earliest("r"), earliest("rcd")) == (3, 3)
        assert values(fetch(stub, offset=3, topic="r").records) == [(3, b"new:0"), (4, b"new:1")]
        assert fetch(stub, offset=0, topic="r").error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        time.sleep(0.3)  # more retention passes: the compact-only topic keeps everything
        assert earliest("rc") == 0
        assert [v for _, v in values(fetch(stub, topic="rc").records)] == [b"v:0", b"v:1", b"v:2", b"new:0", b"new:1"]
        channel.close()
    finally:
        node.close()


def test_flush_messages_1_acknowledges_after_a_group_fsync(stub: ketch_pb2_grpc.KetchStub) -> None:
    stub.CreateTopics(
        pb.CreateTopicsRequest(
            topics=[pb.NewTopic(name="synced", num_partitions=1, replication_factor=1, configs={"flush.messages": "1"})]
        )
    )
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(produce(stub, make_batch(0, 2, tag=f"s{i}"), "synced").base_offset)
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == list(range(0, 16, 2))
    assert len(values(fetch(stub, topic="synced").records)) == 16


def test_idempotent_retry_gets_the_original_offset_and_is_stored_once(
    node: NodeProcess, stub: ketch_pb2_grpc.KetchStub
) -> None:
    """KIP-98 through the real service: a retry is answered with its first offset (acks=1 and
    acks=all), a gap and an older epoch are refused, a two-batch request is INVALID_RECORD."""

    def batch(seq: int, epoch: int = 0, count: int = 2, tag: str = "i") -> bytes:
        return make_batch(0, count, tag=tag, producer_id=77, producer_epoch=epoch, base_sequence=seq)

    assert produce(stub, make_batch(0, 1, tag="plain")).base_offset == 0
    first = produce(stub, batch(0), acks=-1)
    assert (first.error_code, first.base_offset) == (0, 1)
    for acks in (1, -1):
        again = produce(stub, batch(0), acks=acks)
        assert (again.error_code, again.base_offset) == (0, 1)
    gap = produce(stub, batch(5))
    assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert "producer 77 epoch 0" in gap.error_message and "expected sequence 2" in gap.error_message
    assert produce(stub, batch(2)).base_offset == 3
    assert produce(stub, batch(0, epoch=1, tag="j")).base_offset == 5  # KIP-360 bump: sequence 0
    old = produce(stub, batch(4, epoch=0))
    assert old.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    two = produce(stub, batch(2, epoch=1) + make_batch(0, 1))
    assert two.error_code == ErrorCode.INVALID_RECORD
    assert [v for _, v in stored(stub)] == [b"plain:0", b"i:0", b"i:1", b"i:0", b"i:1", b"j:0", b"j:1"]
    node.restart()
    wait_broker_alive(node)
    channel = grpc.insecure_channel(node.bootstrap)
    stub = ketch_pb2_grpc.KetchStub(channel)
    deadline = time.monotonic() + 15
    while (again := produce(stub, batch(0, epoch=1, tag="j"))).error_code and time.monotonic() < deadline:
        time.sleep(0.05)  # leadership is re-elected once the restarted broker is unfenced
    assert (again.error_code, again.base_offset) == (0, 5)  # the producer state survived the restart
    assert produce(stub, batch(2, epoch=1, tag="j")).base_offset == 7
    channel.close()
