"""The ketch.v1.Ketch gRPC service: protobuf in, Broker calls, protobuf out.

This is a thin driver. Rules:
- Errors are per partition / per topic in the response (``error_code`` +
  ``error_message``), so one bad partition never fails the others; a
  ``KetchError`` carries the code, anything unexpected becomes
  UNKNOWN_SERVER_ERROR with its text (and is logged) while the node keeps
  serving.
- Produce: acks must be -1, 0 or 1 (INVALID_REQUIRED_ACKS otherwise). With
  acks=all every partition of the request is appended before any of them
  waits, and they wait for replication together (one round trip for the whole
  request, as Kafka's DelayedProduce, not one per partition in turn). An
  idempotent producer's retry of a stored batch (``AppendResult.duplicate``)
  is answered with the original base offset; with acks=all it waits until
  the high watermark passes the original last offset. A topic
  with ``flush.messages=1`` is acknowledged only after a group fsync of the WAL
  (node/group_commit.py) that covers its append.
- Transactions (KIP-98/KIP-890; rules in replication/transactions.py):
  Produce of a transactional batch that would start a transaction on a
  partition (``Partition.transaction_to_verify``) first awaits
  ``verify_transaction(transactional_id, pid, epoch, topic, partition)`` (the
  transaction coordinator's AddPartitionsToTxn verify_only; it raises
  ``KetchError`` on refusal); without one, such a batch is INVALID_TXN_STATE.
  WriteTxnMarkers writes each marker on the local leader replicas
  (``_write_marker``: ``Partition.write_marker`` by the marker's transaction
  version, 0 meaning TV2, anything but 0-2 INVALID_REQUEST; the topic's flush rule, then
  acks=all replication; a duplicate or stale marker writes nothing but still
  waits until what this leader holds is replicated) and answers per
  partition. Fetch with isolation_level 1 (read_committed; followers ignore
  it) reads below the last stable offset and carries the aborted
  transactions; every fetch answer carries the last stable offset; ListOffsets
  LATEST under read_committed answers it.
- OffsetForLeaderEpoch (KIP-320): on the leader, the largest epoch <= the one
  asked for in its log and where it ends, after ``Partition.check_epoch``. A marker moves the LSO: it notifies
  the fetch waiters like any append.
- Fetch: node/fetch_service.py (a mixin, with its rules).
- One instance per listener (node/listeners.py), knowing its name: Metadata and
  FindCoordinator answer each broker's address on that listener and leave out a
  broker without it.
- Metadata and topic administration are delegated to node/topic_admin.py
  (answered from the metadata image; writes forwarded to the controller),
  DescribeConfigs and IncrementalAlterConfigs to node/config_admin.py; the ACL calls to
  node/acl_admin.py;
  partition reassignments to node/reassignment_admin.py;
  consumer groups to node/group_service.py (the group coordinator).
- InitProducerId (KIP-98): without a transactional id, a new producer id with
  epoch 0 from this broker's block (node/producer_ids.py); with one, the
  transaction coordinator's answer (node/txn_service.py, which holds the other
  transaction RPCs).
- Every call is timed into ``ketch_request_latency_seconds{api}``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode, KetchError
from node import reassignment_admin
from node.acl_admin import AclAdmin
from node.broker import Broker
from node.config_admin import ConfigAdmin
from node.fetch_service import READ_COMMITTED, FetchHandlers
from node.fetch_session import FetchSessions
from node.fetch_waiters import FetchWaiters
from node.group_commit import GroupCommit
from node.group_coordinator import OFFSETS_TOPIC, GroupManager
from node.group_service import GroupHandlers
from node.metrics import NodeMetrics, timed
from node.produce_purgatory import await_replication
from node.producer_ids import ProducerIdManager
from node.sasl import SaslSessions
from node.topic_admin import TopicAdmin, error_fields
from node.txn_coordinator import TransactionManager
from node.txn_service import TxnHandlers
from replication.partition import AppendResult, Partition
from replication.transactions import TRANSACTION_VERSIONS, TV2

R = TypeVar("R")
LATEST, EARLIEST = -1, -2
VerifyTransaction = Callable[[str, int, int, str, int], Awaitable[None]]


async def _settle(waits: Sequence[Awaitable[None]]) -> list[BaseException | None]:
    """Await every wait at once; each one's exception, or None (one alone needs no task)."""
    if len(waits) == 1:
        try:
            await waits[0]
        except Exception as exc:
            return [exc]
        return [None]
    return await asyncio.gather(*waits, return_exceptions=True)


class KetchService(FetchHandlers, GroupHandlers, TxnHandlers, ketch_pb2_grpc.KetchServicer):
    def __init__(
        self,
        broker: Broker,
        admin: TopicAdmin,
        metrics: NodeMetrics,
        waiters: FetchWaiters,
        cluster_id: str,
        group_commit: GroupCommit,
        groups: GroupManager,
        producer_ids: ProducerIdManager | None = None,
        verify_transaction: VerifyTransaction | None = None,
        transactions: TransactionManager | None = None,
        sasl: SaslSessions | None = None,
        listener: str = "PLAINTEXT",
        fetch_sessions: FetchSessions | None = None,
    ) -> None:
        self.listener = listener  # the one this instance serves: addresses in answers are on it
        if transactions is not None:
            self.transactions = transactions
        self.producer_ids = producer_ids
        self.verify_transaction = verify_transaction
        self.groups = groups
        self.group_commit = group_commit
        self.broker = broker
        self.admin = admin
        self.configs = ConfigAdmin(broker, admin.controllers, admin.follower)
        self.acls = AclAdmin(broker, admin.controllers, admin.follower)
        self.sasl = sasl or SaslSessions(frozenset())
        self.cluster_id = cluster_id
        self.metrics = metrics
        self.waiters = waiters
        # shared by the node's listeners (not ``or``: a FetchSessions with no session yet is falsy)
        self.fetch_sessions = FetchSessions(waiters) if fetch_sessions is None else fetch_sessions
        self.node_id = broker.config.node_id

    def _count_error(self, api: str, code: int) -> None:
        self.metrics.request_errors.labels(api, ErrorCode(code).name).inc()

    # -- Produce -------------------------------------------------------------

    @timed("Produce")
    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        response = pb.ProduceResponse()
        # acks=all: every partition is appended first, then all wait for replication together
        # (Kafka's DelayedProduce covers the whole request). Waiting inside the loop made a
        # request of N partitions take N replication round trips, one after the other.
        replicating: list[tuple[pb.PartitionProduceResult, Partition, AppendResult, int]] = []
        for item in request.partitions:
            result = response.partitions.add(topic=item.topic, partition=item.partition, base_offset=-1)
            try:
                if request.acks not in (-1, 0, 1):
                    raise KetchError(
                        f"acks={request.acks} is not valid; use -1 (all), 0 or 1",
                        code=ErrorCode.INVALID_REQUIRED_ACKS,
                    )
                part, config = self.broker.partition(item.topic, item.partition)
                records = item.records  # protobuf (upb) copies a bytes field on every read: read it once
                verified = await self._verify(request.transactional_id, part, records)
                append = functools.partial(
                    part.append,
                    records,
                    max_message_bytes=config.max_message_bytes,
                    acks=request.acks,
                    min_insync_replicas=config.min_insync_replicas,
                    sync=False,
                    transaction_verified=verified,
                    require_keys=config.compacted,
                    max_decompressed_bytes=self.broker.config.max_decompressed_batch_bytes,
                )
                appended = append()
                if config.flush_messages == 1:
                    await self.group_commit.flush()  # one fsync shared with every concurrent append
                if not appended.duplicate:  # a producer's retry of a stored batch: counted the first time
                    self.metrics.bytes_in.labels(item.topic).inc(appended.bytes)
                    self.metrics.messages_in.labels(item.topic).inc(appended.last_offset - appended.base_offset + 1)
                    self.waiters.notify((item.topic, item.partition))
                if request.acks == -1:  # a duplicate waits for its original batch, as the first attempt did
                    replicating.append((result, part, appended, config.min_insync_replicas))
                    continue
                result.base_offset = appended.base_offset
                result.log_start_offset = part.log.log_start_offset
            except Exception as exc:
                result.error_code, result.error_message = error_fields(exc)
                self._count_error("Produce", result.error_code)
        if replicating:
            waits = [self._await_replication(p, a.last_offset, request.timeout_ms, m) for _, p, a, m in replicating]
            outcomes = await _settle(waits)
            for (result, part, appended, _), outcome in zip(replicating, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    result.error_code, result.error_message = error_fields(outcome)
                    self._count_error("Produce", result.error_code)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    result.base_offset = appended.base_offset
                    result.log_start_offset = part.log.log_start_offset
        return response

    async def _verify(self, transactional_id: str, part: Partition, records: bytes) -> bool:
        """KIP-890: whether the coordinator verified the transaction this batch would start here
        (False when it starts none, or nobody can verify: ``append`` then decides)."""
        to_verify = part.transaction_to_verify(records)
        if to_verify is None or self.verify_transaction is None or not transactional_id:
            return False
        await self.verify_transaction(transactional_id, *to_verify, part.topic, part.index)
        return True

    async def _await_replication(self, part: Partition, last_offset: int, timeout_ms: int, min_isr: int) -> None:
        await await_replication(part, last_offset, timeout_ms, min_isr, self.waiters, self.metrics)

    # -- Metadata and offsets --------------------------------------------------

    @timed("Metadata")
    async def Metadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        if not self.broker.metadata_caught_up():
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"broker {self.broker.node_id} is still catching up on the cluster metadata "
                f"(its image is at offset {self.broker.image.offset}); ask another broker",
            )
        return await self.admin.metadata(request, self.cluster_id, self.listener)

    @timed("DescribeTopics")
    async def DescribeTopics(self, request: pb.DescribeTopicsRequest, context: Any) -> pb.DescribeTopicsResponse:
        names = list(request.names) or self.admin.names()
        return pb.DescribeTopicsResponse(topics=[self.admin.describe(n) for n in names])

    @timed("ListOffsets")
    async def ListOffsets(self, request: pb.ListOffsetsRequest, context: Any) -> pb.ListOffsetsResponse:
        response = pb.ListOffsetsResponse()
        for item in request.partitions:
            result = response.partitions.add(topic=item.topic, partition=item.partition, offset=-1, timestamp=-1)
            try:
                part, _ = self.broker.partition(item.topic, item.partition)
                result.leader_epoch = part.leader_epoch
                if item.timestamp == LATEST and request.isolation_level == READ_COMMITTED:
                    result.offset = part.last_stable_offset
                elif item.timestamp == LATEST:
                    result.offset = part.high_watermark
                elif item.timestamp == EARLIEST:
                    result.offset = part.log.log_start_offset
                elif item.timestamp < 0:
                    raise KetchError(
                        f"timestamp {item.timestamp} is not valid; "
                        "use -1 (latest), -2 (earliest) or ms since the epoch",
                        code=ErrorCode.INVALID_REQUEST,
                    )
                else:
                    found = part.offset_for_timestamp(item.timestamp)
                    if found is not None:
                        result.offset, result.timestamp = found
            except Exception as exc:
                result.error_code, result.error_message = error_fields(exc)
                self._count_error("ListOffsets", result.error_code)
        return response

    # -- Topic administration (forwarded to the active controller) ------------

    @timed("OffsetForLeaderEpoch")
    async def OffsetForLeaderEpoch(
        self, request: pb.OffsetForLeaderEpochRequest, context: Any
    ) -> pb.OffsetForLeaderEpochResponse:
        response = pb.OffsetForLeaderEpochResponse()
        for item in request.partitions:
            result = response.partitions.add(topic=item.topic, partition=item.partition, leader_epoch=-1, end_offset=-1)
            try:
                part, _ = self.broker.partition(item.topic, item.partition)
                part.check_epoch(item.current_leader_epoch)
                result.leader_epoch, result.end_offset = part.log.end_offset_for_epoch(item.leader_epoch)
            except Exception as exc:
                result.error_code, result.error_message = error_fields(exc)
                self._count_error("OffsetForLeaderEpoch", result.error_code)
        return response

    @timed("CreateTopics")
    async def CreateTopics(self, request: pb.CreateTopicsRequest, context: Any) -> pb.CreateTopicsResponse:
        return await self.admin.create(request)

    @timed("CreatePartitions")
    async def CreatePartitions(self, request: pb.CreatePartitionsRequest, context: Any) -> pb.CreatePartitionsResponse:
        return await self.admin.create_partitions(request)

    @timed("DeleteTopics")
    async def DeleteTopics(self, request: pb.DeleteTopicsRequest, context: Any) -> pb.DeleteTopicsResponse:
        return await self.admin.delete(request)

    @timed("DescribeConfigs")
    async def DescribeConfigs(self, request: pb.DescribeConfigsRequest, context: Any) -> pb.DescribeConfigsResponse:
        return self.configs.describe(request)

    @timed("IncrementalAlterConfigs")
    async def IncrementalAlterConfigs(
        self, request: pb.IncrementalAlterConfigsRequest, context: Any
    ) -> pb.IncrementalAlterConfigsResponse:
        return await self.configs.alter(request)

    # -- ACLs (node/acl_admin.py) ------------------------------------------------

    @timed("CreateAcls")
    async def CreateAcls(self, request: pb.CreateAclsRequest, context: Any) -> pb.CreateAclsResponse:
        return await self.acls.create(request)

    @timed("DescribeAcls")
    async def DescribeAcls(self, request: pb.DescribeAclsRequest, context: Any) -> pb.DescribeAclsResponse:
        return self.acls.describe(request)

    @timed("DeleteAcls")
    async def DeleteAcls(self, request: pb.DeleteAclsRequest, context: Any) -> pb.DeleteAclsResponse:
        return await self.acls.delete(request)

    @timed("AlterUserScramCredentials")
    async def AlterUserScramCredentials(
        self, request: pb.AlterUserScramCredentialsRequest, context: Any
    ) -> pb.AlterUserScramCredentialsResponse:
        return await self.acls.alter_users(request)

    @timed("DescribeUserScramCredentials")
    async def DescribeUserScramCredentials(
        self, request: pb.DescribeUserScramCredentialsRequest, context: Any
    ) -> pb.DescribeUserScramCredentialsResponse:
        return self.acls.describe_users(request)

    @timed("SaslAuthenticate")
    async def SaslAuthenticate(self, request: pb.SaslAuthenticateRequest, context: Any) -> pb.SaslAuthenticateResponse:
        return self.sasl.authenticate(request)

    # -- Partition reassignments (node/reassignment_admin.py) -------------------

    @timed("AlterPartitionReassignments")
    async def AlterPartitionReassignments(
        self, request: pb.AlterPartitionReassignmentsRequest, context: Any
    ) -> pb.AlterPartitionReassignmentsResponse:
        return await reassignment_admin.alter(self.admin, request)

    @timed("ListPartitionReassignments")
    async def ListPartitionReassignments(
        self, request: pb.ListPartitionReassignmentsRequest, context: Any
    ) -> pb.ListPartitionReassignmentsResponse:
        return reassignment_admin.list_ongoing(self.admin, request)

    # -- Idempotent and transactional producers ----------------------------------

    @timed("InitProducerId")
    async def InitProducerId(self, request: pb.InitProducerIdRequest, context: Any) -> pb.InitProducerIdResponse:
        # Without a transactional id the request's producer id and epoch are not used: an idempotent
        # producer bumps its epoch locally (KIP-360) and comes back here only for a new id.
        if request.transactional_id:
            return await self.init_transactional_producer(request)
        try:
            if self.producer_ids is None:
                raise KetchError("this broker hands out no producer ids", code=ErrorCode.COORDINATOR_NOT_AVAILABLE)
            pid = await self.producer_ids.generate_producer_id()
        except Exception as exc:
            code, message = error_fields(exc)
            self._count_error("InitProducerId", code)
            return pb.InitProducerIdResponse(error_code=code, error_message=message, producer_id=-1, producer_epoch=-1)
        return pb.InitProducerIdResponse(producer_id=pid, producer_epoch=0)

    # -- Transactions: markers from the transaction coordinator -----------------

    @timed("WriteTxnMarkers")
    async def WriteTxnMarkers(self, request: pb.WriteTxnMarkersRequest, context: Any) -> pb.WriteTxnMarkersResponse:
        response = pb.WriteTxnMarkersResponse()
        writes = []
        for marker in request.markers:
            for ref in marker.partitions:
                result = response.results.add(producer_id=marker.producer_id, topic=ref.topic, partition=ref.partition)
                writes.append(self._answer_marker(result, marker))
        await asyncio.gather(*writes)
        return response

    async def _answer_marker(self, result: pb.TxnMarkerResult, marker: pb.TxnMarker) -> None:
        try:
            version = marker.transaction_version or TV2
            if version not in TRANSACTION_VERSIONS:
                raise KetchError(
                    f"marker of producer {marker.producer_id}: transaction_version {version} is not 1 or 2 (0 = 2)",
                    code=ErrorCode.INVALID_REQUEST,
                )
            if result.topic == OFFSETS_TOPIC:  # the group coordinator ends the transaction's pending offsets
                await self.groups.write_txn_marker(
                    result.partition,
                    marker.producer_id,
                    marker.producer_epoch,
                    marker.commit,
                    marker.coordinator_epoch,
                    transaction_version=version,
                )
                return
            part, config = self.broker.partition(result.topic, result.partition)
            await self._write_marker(part, marker, config.min_insync_replicas, config.flush_messages == 1)
        except Exception as exc:
            result.error_code, result.error_message = error_fields(exc)
            self._count_error("WriteTxnMarkers", result.error_code)

    async def _write_marker(self, part: Partition, marker: pb.TxnMarker, min_isr: int, flush: bool) -> None:
        """Write one marker on a local leader replica and wait like acks=all (raises ``KetchError``)."""
        written: AppendResult | None = part.write_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
            marker.coordinator_epoch,
            min_insync_replicas=min_isr,
            timestamp_ms=int(time.time() * 1000),
            sync=False,
            transaction_version=marker.transaction_version or TV2,
        )
        # A duplicate marker writes nothing, but its first attempt may not be replicated yet.
        last = written.last_offset if written is not None else part.log.log_end_offset - 1
        if written is not None:
            self.waiters.notify((part.topic, part.index))  # the LSO may have moved
        if flush:
            await self.group_commit.flush()
        if last >= 0:
            await self._await_replication(part, last, 0, min_isr)
