"""The partition side of transactions on a real node process over a real gRPC channel.

No transaction coordinator is wired in here (the node has no ``verify_transaction``), so a
transactional batch that would start a transaction is INVALID_TXN_STATE. WriteTxnMarkers
writes a marker for a producer unknown to the partition (rule 4: it ends nothing and fences
the old epoch), answers a duplicate NONE without writing it, and answers each partition with
its own typed error; read_committed fetches and ListOffsets answer the last stable offset.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import RETRIABLE, ErrorCode
from ketch.recordbatch import marker_is_commit, split_batches
from node.process import NodeProcess
from tests.batches import make_batch

PID = 77


@pytest.fixture
def stub(node: NodeProcess) -> Iterator[ketch_pb2_grpc.KetchStub]:
    channel = grpc.insecure_channel(node.bootstrap)
    stub = ketch_pb2_grpc.KetchStub(channel)
    created = stub.CreateTopics(
        pb.CreateTopicsRequest(topics=[pb.NewTopic(name="t", num_partitions=1, replication_factor=1)])
    )
    assert created.topics[0].error_code == 0, created
    yield stub
    channel.close()


def produce(stub: ketch_pb2_grpc.KetchStub, records: bytes, tid: str = "") -> pb.PartitionProduceResult:
    request = pb.ProduceRequest(
        acks=-1, transactional_id=tid, partitions=[pb.PartitionRecords(topic="t", partition=0, records=records)]
    )
    result: pb.PartitionProduceResult = stub.Produce(request, timeout=10).partitions[0]
    return result


def fetch(stub: ketch_pb2_grpc.KetchStub, isolation: int, offset: int = 0, wait_ms: int = 0) -> pb.FetchPartitionResult:
    request = pb.FetchRequest(
        max_wait_ms=wait_ms,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=isolation,
        partitions=[pb.FetchPartition(topic="t", partition=0, fetch_offset=offset)],
    )
    result: pb.FetchPartitionResult = stub.Fetch(request, timeout=10).partitions[0]
    return result


def markers(stub: ketch_pb2_grpc.KetchStub, epoch: int, commit: bool, version: int = 0) -> list[pb.TxnMarkerResult]:
    request = pb.WriteTxnMarkersRequest(
        markers=[
            pb.TxnMarker(
                producer_id=PID,
                producer_epoch=epoch,
                commit=commit,
                coordinator_epoch=1,
                transaction_version=version,
                partitions=[
                    pb.TopicPartitionRef(topic="t", partition=0),
                    pb.TopicPartitionRef(topic="nope", partition=0),
                ],
            )
        ]
    )
    return list(stub.WriteTxnMarkers(request, timeout=30).results)


def test_markers_lso_and_verification_on_a_node(stub: ketch_pb2_grpc.KetchStub) -> None:
    assert produce(stub, make_batch(0, 2)).error_code == 0
    txn = make_batch(0, 1, producer_id=PID, producer_epoch=0, base_sequence=0, transactional=True)
    refused = produce(stub, txn, tid="app-1")
    deadline = time.monotonic() + 30
    while refused.error_code in RETRIABLE and time.monotonic() < deadline:  # the coordinator is loading
        time.sleep(0.2)
        refused = produce(stub, txn, tid="app-1")
    # The coordinator never heard of "app-1": verification refuses the batch, and nothing is stored.
    assert refused.error_code == ErrorCode.INVALID_PRODUCER_ID_MAPPING, refused
    no_tid = produce(stub, txn)
    assert no_tid.error_code == ErrorCode.INVALID_TXN_STATE and "verify" in no_tid.error_message

    first = markers(stub, 1, commit=False)
    assert [(r.topic, r.error_code) for r in first] == [("t", 0), ("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
    assert [r.error_code for r in markers(stub, 1, commit=True)][:1] == [0]  # a duplicate: NONE, nothing written
    assert [r.error_code for r in markers(stub, 1, commit=True, version=1)][:1] == [0]  # TV1: nothing open either
    bad = markers(stub, 2, commit=True, version=7)  # typed, per partition, nothing written (the HW below)
    assert [r.error_code for r in bad] == [ErrorCode.INVALID_REQUEST] * 2 and "transaction_version 7" in bad[
        0
    ].error_message
    end = stub.EndTxn(
        pb.EndTxnRequest(
            transactional_id="app-1", producer_id=PID, producer_epoch=0, commit=True, transaction_version=7
        )
    )
    assert end.error_code == ErrorCode.INVALID_REQUEST and "transaction_version 7" in end.error_message

    for isolation in (0, 1):
        result = fetch(stub, isolation)
        assert result.error_code == 0 and result.high_watermark == result.last_stable_offset == 3
        headers = [h for h, _ in split_batches(result.records)]
        assert [(h.base_offset, h.is_control) for h in headers] == [(0, False), (2, True)]
        assert not marker_is_commit(split_batches(result.records)[1][1])
        assert list(result.aborted_transactions) == []
    offsets = stub.ListOffsets(
        pb.ListOffsetsRequest(
            isolation_level=1, partitions=[pb.ListOffsetsPartition(topic="t", partition=0, timestamp=-1)]
        )
    )
    assert offsets.partitions[0].offset == 3

    late = produce(stub, txn, tid="app-1")  # data of the fenced epoch 0
    assert late.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    control = produce(stub, split_batches(fetch(stub, 0).records)[1][1].tobytes())
    assert control.error_code == ErrorCode.INVALID_RECORD


def test_a_marker_wakes_a_waiting_read_committed_fetch(stub: ketch_pb2_grpc.KetchStub) -> None:
    assert produce(stub, make_batch(0, 2)).error_code == 0
    answers: list[pb.FetchPartitionResult] = []
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: answers.append(fetch(stub, 1, offset=2, wait_ms=20_000)))
    waiter.start()
    time.sleep(0.5)
    assert [r.error_code for r in markers(stub, 1, commit=True)][:1] == [0]
    waiter.join(timeout=15)
    assert answers and time.monotonic() - started < 10
    result = answers[0]
    assert [h.is_control for h, _ in split_batches(result.records)] == [True] and result.last_stable_offset == 3


def scrape(node: NodeProcess) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ketch_") and " " in line
    }


def test_transaction_metrics_follow_an_open_then_committed_transaction(
    node: NodeProcess, stub: ketch_pb2_grpc.KetchStub
) -> None:
    tid = "metrics-tx"
    found = stub.FindCoordinator(pb.FindCoordinatorRequest(group_id=tid, key_type=1), timeout=30)
    assert found.status.error_code == 0, found.status
    deadline = time.monotonic() + 30
    while True:
        init = stub.InitProducerId(pb.InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=60000))
        if init.error_code not in RETRIABLE or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert init.error_code == 0, init
    pid, epoch = init.producer_id, init.producer_epoch
    added = stub.AddPartitionsToTxn(
        pb.AddPartitionsToTxnRequest(
            transactional_id=tid, producer_id=pid, producer_epoch=epoch, partitions=[pb.TopicPartitionRef(topic="t")]
        )
    )
    assert added.error_code == 0, added
    txn = make_batch(0, 3, producer_id=pid, producer_epoch=epoch, base_sequence=0, transactional=True)
    assert produce(stub, txn, tid=tid).error_code == 0

    open_ = scrape(node)
    where = '{partition="0",topic="t"}'
    assert open_[f"ketch_ongoing_transactions{where}"] == 1
    assert open_[f"ketch_last_stable_offset_lag{where}"] == 3
    assert open_["ketch_transactions_ongoing"] == 1 and open_["ketch_transactional_ids"] == 1
    assert open_[f"ketch_producer_id_count{where}"] == 1

    ended = stub.EndTxn(pb.EndTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch, commit=True))
    assert ended.error_code == 0 and ended.producer_epoch == epoch + 1, ended
    done = scrape(node)  # EndTxn answers once the transaction is complete
    assert done[f"ketch_ongoing_transactions{where}"] == 0 and done[f"ketch_last_stable_offset_lag{where}"] == 0
    assert done["ketch_transactions_ongoing"] == 0
    assert done['ketch_transactions_ended_total{outcome="committed"}'] == 1
