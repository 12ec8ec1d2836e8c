"""Transactions on three real nodes, driven with raw gRPC: the server side end to end.

No client library logic: the test is the producer. It checks the coordinator,
the markers, KIP-890 verification and read_committed together:

- InitProducerId with a transactional id, AddPartitionsToTxn, transactional
  Produce and EndTxn(commit): read_committed sees nothing before the commit
  (the LSO holds at the transaction's first offset) and everything after it;
  EndTxn answers the next epoch (epoch + 1).
- A transactional batch for a partition never added is refused (verification);
  nothing is stored.
- An aborted transaction is returned with its aborted range to read_committed.
- A delayed duplicate of the first transaction's EndTxn, arriving while the
  second is open, is refused and leaves the second alone (KAFKA-17754).
- A second InitProducerId fences the first session: its Produce and EndTxn are
  refused, and none of its later writes is visible to read_committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ketch import Admin, NewTopic
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode
from ketch.records import decode_batches
from node.cluster import LocalCluster
from tests.harness import retry, running_cluster

TOPIC = "txn"
TID = "tx-node-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = tmp_path_factory.mktemp("txn-node")
    with running_cluster(path / "cluster", 3, ["--transaction-state-num-partitions", "2"]) as c:
        with Admin(bootstrap_servers=c.bootstrap, request_timeout_ms=30000) as admin:
            admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])
        yield c


def stub_at(address: str) -> ketch_pb2_grpc.KetchStub:
    return ketch_pb2_grpc.KetchStub(grpc.insecure_channel(address))


def coordinator(cluster: LocalCluster) -> ketch_pb2_grpc.KetchStub:
    any_node = stub_at(cluster.bootstrap.split(",")[0])
    found = retry(
        lambda: any_node.FindCoordinator(pb.FindCoordinatorRequest(group_id=TID, key_type=1), timeout=30),
        lambda r: r.status.error_code == 0,
    )
    assert found.status.error_code == 0, found.status
    return stub_at(f"{found.host}:{found.port}")


def leader(cluster: LocalCluster, partition: int) -> ketch_pb2_grpc.KetchStub:
    any_node = stub_at(cluster.bootstrap.split(",")[0])
    meta = any_node.Metadata(pb.MetadataRequest(topics=[TOPIC]), timeout=10)
    brokers = {b.node_id: f"{b.host}:{b.port}" for b in meta.brokers}
    state = next(p for p in meta.topics[0].partitions if p.partition == partition)
    return stub_at(brokers[state.leader_id])


def batch(pid: int, epoch: int, seq: int, values: list[bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 1, pid, epoch, seq, 1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    return bytes(builder.build())


def produce(cluster: LocalCluster, partition: int, records: bytes, tid: str = TID) -> pb.PartitionProduceResult:
    request = pb.ProduceRequest(acks=-1, timeout_ms=10000, transactional_id=tid)
    request.partitions.add(topic=TOPIC, partition=partition, records=records)
    # NOT_COORDINATOR is retriable (the leader could not reach the coordinator to verify; nothing
    # was stored), as a client retries it: seen once in a full-suite run while channels came up.
    return retry(
        lambda: leader(cluster, partition).Produce(request, timeout=30).partitions[0],
        lambda r: r.error_code != ErrorCode.NOT_COORDINATOR,
    )


def fetch(cluster: LocalCluster, partition: int, committed: bool) -> tuple[list[bytes | None], Any]:
    request = pb.FetchRequest(max_wait_ms=0, max_bytes=1 << 20, isolation_level=1 if committed else 0)
    request.partitions.add(topic=TOPIC, partition=partition, fetch_offset=0, partition_max_bytes=1 << 20)
    result = leader(cluster, partition).Fetch(request, timeout=10).partitions[0]
    assert result.error_code == 0, result.error_message
    decoded = decode_batches(TOPIC, partition, result.records)
    aborted = {(a.producer_id, a.first_offset) for a in result.aborted_transactions}
    values = [r.value for r in decoded.records]
    if committed:  # what a read_committed consumer keeps: records outside aborted ranges
        values = [r.value for r in decoded.records if not any(r.offset >= first for _, first in aborted)]
    return values, result


def init(stub: ketch_pb2_grpc.KetchStub) -> pb.InitProducerIdResponse:
    request = pb.InitProducerIdRequest(transactional_id=TID, transaction_timeout_ms=60000, producer_id=-1)
    answer = retry(lambda: stub.InitProducerId(request, timeout=30), lambda r: r.error_code == 0)
    assert answer.error_code == 0, answer.error_message
    return answer


def add(stub: ketch_pb2_grpc.KetchStub, pid: int, epoch: int, partitions: list[int]) -> pb.AddPartitionsToTxnResponse:
    request = pb.AddPartitionsToTxnRequest(transactional_id=TID, producer_id=pid, producer_epoch=epoch)
    for p in partitions:
        request.partitions.add(topic=TOPIC, partition=p)
    return retry(lambda: stub.AddPartitionsToTxn(request, timeout=30), lambda r: r.error_code != 51)


def end(stub: ketch_pb2_grpc.KetchStub, pid: int, epoch: int, commit: bool) -> pb.EndTxnResponse:
    request = pb.EndTxnRequest(transactional_id=TID, producer_id=pid, producer_epoch=epoch, commit=commit)
    return stub.EndTxn(request, timeout=30)


def test_commit_abort_verification_retry_and_fencing(cluster: LocalCluster) -> None:
    stub = coordinator(cluster)
    first = init(stub)
    pid, epoch = first.producer_id, first.producer_epoch

    # Transaction 1: two partitions, committed.
    assert add(stub, pid, epoch, [0, 1]).error_code == 0
    assert produce(cluster, 0, batch(pid, epoch, 0, [b"a0", b"a1"])).error_code == 0
    assert produce(cluster, 1, batch(pid, epoch, 0, [b"b0"])).error_code == 0
    # Not added: the leader's verification refuses it and stores nothing.
    refused = produce(cluster, 2, batch(pid, epoch, 0, [b"never"]))
    assert refused.error_code == ErrorCode.INVALID_TXN_STATE, refused
    assert fetch(cluster, 2, committed=False)[0] == []
    values, result = fetch(cluster, 0, committed=True)
    assert values == [] and result.last_stable_offset == 0, "read_committed must stop at the open transaction"
    assert fetch(cluster, 0, committed=False)[0] == [b"a0", b"a1"]

    ended = end(stub, pid, epoch, commit=True)
    assert ended.error_code == 0, ended.error_message
    assert (ended.producer_id, ended.producer_epoch) == (pid, epoch + 1)
    assert retry(lambda: fetch(cluster, 0, True)[0], lambda v: v == [b"a0", b"a1"]) == [b"a0", b"a1"]
    assert retry(lambda: fetch(cluster, 1, True)[0], lambda v: v == [b"b0"]) == [b"b0"]

    # Transaction 2 (epoch + 1) on partition 0, then a delayed retry of transaction 1's EndTxn.
    epoch2 = epoch + 1
    assert add(stub, pid, epoch2, [0]).error_code == 0
    assert produce(cluster, 0, batch(pid, epoch2, 0, [b"c0"])).error_code == 0
    late = end(stub, pid, epoch, commit=True)
    # The producer already moved on, so this is a delayed duplicate: refused (or answered as before),
    # never applied to transaction 2.
    assert late.error_code == ErrorCode.PRODUCER_FENCED or (late.error_code == 0 and late.producer_epoch == epoch2)
    assert fetch(cluster, 0, True)[0] == [b"a0", b"a1"], "the retry must not commit transaction 2"
    wrong = end(stub, pid, epoch, commit=False)
    assert wrong.error_code != 0, "an abort with transaction 1's epoch must not decide transaction 2"

    # Abort transaction 2: never visible to read_committed, visible to read_uncommitted.
    aborted = end(stub, pid, epoch2, commit=False)
    assert aborted.error_code == 0 and aborted.producer_epoch == epoch2 + 1
    _, result = retry(lambda: fetch(cluster, 0, True), lambda r: r[1].last_stable_offset == r[1].high_watermark)
    assert fetch(cluster, 0, True)[0] == [b"a0", b"a1"]
    assert [(a.producer_id, a.first_offset) for a in result.aborted_transactions] == [(pid, 3)]
    assert b"c0" in fetch(cluster, 0, False)[0]

    # Zombie: a new session fences the old one; its writes never become visible.
    epoch3 = epoch2 + 1
    assert add(stub, pid, epoch3, [1]).error_code == 0
    assert produce(cluster, 1, batch(pid, epoch3, 0, [b"zombie-open"])).error_code == 0
    second = init(stub)  # aborts the open transaction, then bumps the epoch
    assert second.producer_id == pid and second.producer_epoch > epoch3
    fenced = end(stub, pid, epoch3, commit=True)
    assert fenced.error_code in (ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH), fenced
    late_write = produce(cluster, 1, batch(pid, epoch3, 1, [b"zombie-late"]))
    assert late_write.error_code in (ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.PRODUCER_FENCED), late_write
    values = retry(lambda: fetch(cluster, 1, True), lambda r: r[1].last_stable_offset == r[1].high_watermark)[0]
    assert values == [b"b0"], "no write of the fenced session may be visible to read_committed"

    described = stub.DescribeTransactions(pb.DescribeTransactionsRequest(transactional_ids=[TID]), timeout=10)
    d = described.transactions[0]
    assert d.error_code == 0 and d.producer_id == pid and d.producer_epoch == second.producer_epoch
