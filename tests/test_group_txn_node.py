"""Transactional offset commits on a real node over real gRPC (KIP-98 TxnOffsetCommit, KIP-447, KIP-890).

One node, the test as the transactional producer with raw stubs: InitProducerId, AddOffsetsToTxn,
TxnOffsetCommit, EndTxn. It checks that
- the offsets are pending until the transaction commits: OffsetFetch answers UNSTABLE_OFFSET_COMMIT
  for them (and never the pending offset), then the committed offset once the marker is written; the
  admin's OffsetFetch of every partition answers the committed offset meanwhile;
- an aborted transaction's offsets never become visible;
- a TxnOffsetCommit for a group whose offsets partition was not added to the transaction is refused
  by KIP-890 verification and changes nothing;
- a fenced session (older epoch) is refused;
- after a restart the offsets log (transactional batches and markers) replays to the same offsets,
  an open transaction's still pending;
- both internal topics are compacted (``cleanup.policy=compact``, ``retention.ms=-1``) and every
  record the two coordinators wrote to them has a key, as compaction needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode
from ketch.records import ConsumerRecord, decode_batches
from node.process import NodeProcess
from tests.harness import retry, start_node

ARGS = ["--offsets-topic-num-partitions", "1", "--transaction-state-num-partitions", "1"]
TID = "txg-node"
GROUP = "txg-group"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    n = start_node(tmp_path, extra_args=ARGS)
    try:
        yield n
    finally:
        n.close()


def ready(stub: ketch_pb2_grpc.KetchStub) -> None:
    for key_type, key in ((0, GROUP), (1, TID)):  # both internal topics exist and are loaded
        request = pb.FindCoordinatorRequest(group_id=key, key_type=key_type)

        def find(r: pb.FindCoordinatorRequest = request) -> pb.FindCoordinatorResponse:
            return stub.FindCoordinator(r, timeout=30)

        found = retry(find, lambda r: r.status.error_code == 0)
        assert found.status.error_code == 0, found.status


def init(stub: ketch_pb2_grpc.KetchStub) -> tuple[int, int]:
    request = pb.InitProducerIdRequest(transactional_id=TID, transaction_timeout_ms=60000, producer_id=-1)
    answer = retry(lambda: stub.InitProducerId(request, timeout=30), lambda r: r.error_code == 0)
    assert answer.error_code == 0, answer.error_message
    return answer.producer_id, answer.producer_epoch


def add_offsets(stub: ketch_pb2_grpc.KetchStub, pid: int, epoch: int) -> None:
    request = pb.AddOffsetsToTxnRequest(transactional_id=TID, producer_id=pid, producer_epoch=epoch, group_id=GROUP)
    answer = retry(lambda: stub.AddOffsetsToTxn(request, timeout=30), lambda r: r.error_code == 0)
    assert answer.error_code == 0, answer.error_message


def txn_commit(stub: ketch_pb2_grpc.KetchStub, pid: int, epoch: int, offset: int) -> pb.TxnOffsetCommitResponse:
    request = pb.TxnOffsetCommitRequest(
        transactional_id=TID, group_id=GROUP, producer_id=pid, producer_epoch=epoch, member_id="", generation=-1
    )
    request.offsets.add(topic="in", partition=0, offset=offset)
    return retry(
        lambda: stub.TxnOffsetCommit(request, timeout=30),
        lambda r: (
            r.status.error_code not in (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.CONCURRENT_TRANSACTIONS)
        ),
    )


def end(stub: ketch_pb2_grpc.KetchStub, pid: int, epoch: int, commit: bool) -> None:
    request = pb.EndTxnRequest(transactional_id=TID, producer_id=pid, producer_epoch=epoch, commit=commit)
    answer = retry(
        lambda: stub.EndTxn(request, timeout=30), lambda r: r.error_code != ErrorCode.CONCURRENT_TRANSACTIONS
    )
    assert answer.error_code == 0 and answer.producer_epoch == epoch + 1, answer


def fetched(stub: ketch_pb2_grpc.KetchStub) -> tuple[int, int, int]:
    """(status code, partition error code, offset) of OffsetFetch for in-0."""
    request = pb.OffsetFetchRequest(group_id=GROUP, partitions=[pb.TopicPartitionRef(topic="in", partition=0)])
    answer = retry(
        lambda: stub.OffsetFetch(request, timeout=30),
        lambda r: r.status.error_code != ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    )
    return answer.status.error_code, answer.offsets[0].error_code, answer.offsets[0].offset


def stable(stub: ketch_pb2_grpc.KetchStub) -> int:
    """The committed offset once no transaction holds it pending (the markers are asynchronous)."""
    status, error, offset = retry(lambda: fetched(stub), lambda f: f[0] == ErrorCode.NONE, timeout_s=30)
    assert (status, error) == (ErrorCode.NONE, ErrorCode.NONE)
    return offset


def whole_log(stub: ketch_pb2_grpc.KetchStub, topic: str) -> list[ConsumerRecord]:
    """Every data record of ``topic``'s partition 0 (control batches are skipped)."""
    request = pb.FetchRequest(
        max_bytes=1 << 24, partitions=[pb.FetchPartition(topic=topic, partition=0, fetch_offset=0)]
    )
    result = stub.Fetch(request, timeout=30).partitions[0]
    assert result.error_code == 0, result
    return decode_batches(topic, 0, result.records).records


def test_txn_offsets_pending_until_the_marker_and_replayed_after_restart(node: NodeProcess) -> None:
    stub = ketch_pb2_grpc.KetchStub(grpc.insecure_channel(node.bootstrap))
    ready(stub)
    pid, epoch = init(stub)

    # Not added to the transaction: KIP-890 verification refuses it; nothing is stored.
    refused = txn_commit(stub, pid, epoch, 5)
    assert refused.status.error_code == ErrorCode.INVALID_TXN_STATE, refused
    assert stable(stub) == -1

    # Transaction 1 commits offset 10: pending (UNSTABLE_OFFSET_COMMIT) until the marker.
    add_offsets(stub, pid, epoch)
    committed = txn_commit(stub, pid, epoch, 10)
    assert committed.status.error_code == 0 and committed.offsets[0].error_code == 0, committed
    assert fetched(stub) == (ErrorCode.UNSTABLE_OFFSET_COMMIT, ErrorCode.UNSTABLE_OFFSET_COMMIT, -1)
    end(stub, pid, epoch, commit=True)
    assert stable(stub) == 10

    # Transaction 2 (epoch + 1) commits offset 20 and aborts: never visible.
    epoch += 1
    add_offsets(stub, pid, epoch)
    assert txn_commit(stub, pid, epoch, 20).status.error_code == 0
    assert fetched(stub)[0] == ErrorCode.UNSTABLE_OFFSET_COMMIT
    listing = stub.OffsetFetch(pb.OffsetFetchRequest(group_id=GROUP), timeout=30)  # the admin's: as committed
    assert listing.status.error_code == 0 and [(o.offset, o.error_code) for o in listing.offsets] == [(10, 0)]
    end(stub, pid, epoch, commit=False)
    assert stable(stub) == 10

    # A session of an older epoch is refused by the offsets partition's producer state.
    epoch += 1
    add_offsets(stub, pid, epoch)
    assert txn_commit(stub, pid, epoch, 30).status.error_code == 0
    zombie = txn_commit(stub, pid, epoch - 2, 99)
    assert zombie.status.error_code == ErrorCode.INVALID_PRODUCER_EPOCH, zombie
    end(stub, pid, epoch, commit=True)
    assert stable(stub) == 30

    # A restart replays transactional batches and markers: the committed offset, and a transaction
    # still open at the restart holds its offset pending until its marker.
    epoch += 1
    add_offsets(stub, pid, epoch)
    assert txn_commit(stub, pid, epoch, 40).status.error_code == 0
    node.restart()
    stub = ketch_pb2_grpc.KetchStub(grpc.insecure_channel(node.bootstrap))
    ready(stub)
    assert fetched(stub) == (ErrorCode.UNSTABLE_OFFSET_COMMIT, ErrorCode.UNSTABLE_OFFSET_COMMIT, -1)
    listing = stub.OffsetFetch(pb.OffsetFetchRequest(group_id=GROUP), timeout=30)
    assert [o.offset for o in listing.offsets] == [30]
    end(stub, pid, epoch, commit=True)
    assert stable(stub) == 40

    # Both internal topics are compacted, and compaction can keep them: every record has a key.
    described = stub.DescribeTopics(pb.DescribeTopicsRequest(names=["__consumer_offsets", "__transaction_state"]))
    for topic in described.topics:
        assert (topic.configs["cleanup.policy"], topic.configs["retention.ms"]) == ("compact", "-1"), topic.name
        records = whole_log(stub, topic.name)
        assert records and all(r.key is not None for r in records), (topic.name, records)
