"""Idempotent producers against three real nodes: stamped batches, distinct ids, ids across controller failover.

- A producer with the defaults (idempotence on) writes batches that carry its
  producer id, epoch 0 and consecutive base sequences from 0, per partition;
  read back with raw Fetch and ketch/recordbatch.py.
- Every InitProducerId answer is a different producer id, on every broker.
- The active controller is killed (-9) between two InitProducerId calls at two
  other brokers: the second broker's block comes from the new controller and
  holds no id the first was given (blocks never overlap across failover).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ketch import Admin, NewTopic, Producer
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode
from ketch.recordbatch import BatchHeader, split_batches
from node.cluster import LocalCluster
from tests.batches import make_batch
from tests.harness import running_cluster, start_node

TOPIC = "idem"
BLOCK = 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(
        tmp_path / "cluster", 3, ["--broker-session-timeout-ms", "2000", "--broker-heartbeat-interval-ms", "200"]
    ) as c:
        yield c


def init_producer_id(address: str, timeout_s: float = 30.0) -> int:
    """A producer id from the broker at ``address``, retrying retriable refusals until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = ""
    with grpc.insecure_channel(address) as channel:
        stub = ketch_pb2_grpc.KetchStub(channel)
        while time.monotonic() < deadline:
            try:
                r = stub.InitProducerId(pb.InitProducerIdRequest(producer_id=-1, producer_epoch=-1), timeout=15)
            except grpc.RpcError as exc:
                last = str(exc.code())
            else:
                if r.error_code == 0:
                    assert r.producer_epoch == 0
                    return int(r.producer_id)
                last = f"{r.error_code} {r.error_message}"
            time.sleep(0.2)
    raise AssertionError(f"no producer id from {address} within {timeout_s}s: {last}")


def fetch_headers(cluster: LocalCluster, partition: int) -> list[BatchHeader]:
    for node in cluster.nodes.values():
        with grpc.insecure_channel(node.bootstrap) as channel:
            request = pb.FetchRequest(
                max_wait_ms=0,
                max_bytes=8 << 20,
                partitions=[pb.FetchPartition(topic=TOPIC, partition=partition, fetch_offset=0)],
            )
            result = ketch_pb2_grpc.KetchStub(channel).Fetch(request, timeout=10).partitions[0]
            if result.error_code == 0:
                return [h for h, _ in split_batches(result.records)]
    raise AssertionError(f"no leader answered a fetch of {TOPIC}-{partition}")


def test_batches_carry_the_producer_id_and_consecutive_sequences(cluster: LocalCluster) -> None:
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=3)])
    with Producer(bootstrap_servers=cluster.bootstrap, batch_size=500, linger_ms=2) as producer:
        assert producer._aio.enable_idempotence
        futures = [producer.send(TOPIC, f"v{i:04d}".encode() * 10, partition=i % 2) for i in range(400)]
        producer.flush()
        offsets = [f.result().offset for f in futures]
    assert sorted(offsets) == sorted([i // 2 for i in range(400)])
    producer_ids = set()
    for partition in (0, 1):
        headers = fetch_headers(cluster, partition)
        assert len(headers) > 5 and sum(h.records_count for h in headers) == 200
        producer_ids |= {h.producer_id for h in headers}
        assert {h.producer_epoch for h in headers} == {0}
        expected = 0
        for h in headers:
            assert h.base_sequence == expected, f"partition {partition}: sequences {[x.base_sequence for x in headers]}"
            expected += h.records_count
    assert len(producer_ids) == 1 and min(producer_ids) >= 0
    # a second producer gets another id
    with Producer(bootstrap_servers=cluster.bootstrap) as second:
        second.send(TOPIC, b"second", partition=0).result()
    last = fetch_headers(cluster, 0)[-1]
    assert last.producer_id >= 0 and last.producer_id not in producer_ids and last.base_sequence == 0
    # and every broker hands out ids nobody else got
    ids = [init_producer_id(node.bootstrap) for node in cluster.nodes.values() for _ in range(3)]
    assert len(set(ids) | producer_ids | {last.producer_id}) == len(ids) + 2


def test_controller_failover_never_hands_out_a_used_id(cluster: LocalCluster) -> None:
    controller = cluster.active_controller()
    assert controller is not None
    first, second = [n for n in cluster.nodes if n != controller]
    a = init_producer_id(cluster.nodes[first].bootstrap)
    cluster.nodes[controller].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    cluster.nodes[controller].proc.wait(10)  # type: ignore[union-attr]
    b = init_producer_id(cluster.nodes[second].bootstrap, timeout_s=60)
    assert b // BLOCK != a // BLOCK, f"broker {second} got {b} from broker {first}'s block (which gave {a})"
    assert b > a
    # the first broker keeps handing out from its own block
    a2 = init_producer_id(cluster.nodes[first].bootstrap, timeout_s=60)
    assert a2 != a and a2 != b


def test_producer_id_expiration_ms_forgets_an_idle_producer(tmp_path: Path) -> None:
    """A producer silent for ``producer_id_expiration_ms`` is unknown again: a gap in its sequences,
    refused while it is remembered, is then accepted (KIP-360's rule for an unknown producer)."""
    node = start_node(
        tmp_path, extra_args=["--producer-id-expiration-ms", "1500", "--retention-check-interval-ms", "200"]
    )
    try:
        with grpc.insecure_channel(node.bootstrap) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            stub.CreateTopics(
                pb.CreateTopicsRequest(topics=[pb.NewTopic(name="exp", num_partitions=1, replication_factor=1)])
            )

            def produce(seq: int) -> int:
                batch = make_batch(0, 1, producer_id=42, producer_epoch=0, base_sequence=seq)
                request = pb.ProduceRequest(
                    acks=-1, partitions=[pb.PartitionRecords(topic="exp", partition=0, records=batch)]
                )
                return int(stub.Produce(request, timeout=10).partitions[0].error_code)

            assert produce(0) == 0
            assert produce(5) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER  # remembered: a gap
            deadline = time.monotonic() + 15
            while (code := produce(5)) != 0 and time.monotonic() < deadline:
                assert code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
                time.sleep(0.3)
            assert code == 0, "the idle producer was never forgotten"
    finally:
        node.close()
