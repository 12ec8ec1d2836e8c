"""acks=all Produce: the partitions of one request wait for replication together.

Rule (node/service.py, Kafka's DelayedProduce): every partition of the request is
appended before any of them waits, and they wait at once, so a request answers
after the slowest partition's wait, not after the sum of them. Measured with two
real nodes: the follower is paused (SIGSTOP), so each partition's wait runs to the
request's timeout; a request of two such partitions must answer after about one
timeout (waiting in turn takes two).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode
from tests.batches import make_batch
from tests.harness import running_cluster

TIMEOUT_MS = 1500


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the topic's partitions got no leaders with a full ISR"
        time.sleep(0.1)


def test_two_partitions_of_one_request_wait_for_replication_together(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 2, []) as cluster:
        channel = grpc.insecure_channel(cluster.nodes[1].bootstrap)
        stub = ketch_pb2_grpc.KetchStub(channel)
        topic = pb.NewTopic(name="w", num_partitions=4, replication_factor=2, configs={"min.insync.replicas": "2"})
        assert stub.CreateTopics(pb.CreateTopicsRequest(topics=[topic])).topics[0].error_code == 0

        def placed() -> list[pb.PartitionMetadata]:
            (found,) = stub.Metadata(pb.MetadataRequest(topics=["w"])).topics
            ready = [p for p in found.partitions if p.leader_id > 0 and len(p.isr) == 2]
            return ready if len(ready) == 4 else []

        wait_until(lambda: bool(placed()), 30)
        by_leader: dict[int, list[int]] = {}
        for p in placed():
            by_leader.setdefault(p.leader_id, []).append(p.partition)
        leader, partitions = max(by_leader.items(), key=lambda kv: len(kv[1]))  # 4 over 2 nodes: one leads >= 2
        follower = next(n for n in cluster.nodes if n != leader)
        leader_stub = ketch_pb2_grpc.KetchStub(grpc.insecure_channel(cluster.nodes[leader].bootstrap))
        pid = cluster.nodes[follower].proc.pid  # type: ignore[union-attr]
        request = pb.ProduceRequest(
            acks=-1,
            timeout_ms=TIMEOUT_MS,
            partitions=[pb.PartitionRecords(topic="w", partition=p, records=make_batch(0)) for p in partitions[:2]],
        )
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = leader_stub.Produce(request, timeout=30)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert [r.error_code for r in response.partitions] == [ErrorCode.REQUEST_TIMED_OUT] * 2, response
        assert TIMEOUT_MS / 1000 <= elapsed < 1.6 * TIMEOUT_MS / 1000, f"answered after {elapsed:.2f} s"
        channel.close()
