"""The ketch.v1.KetchController gRPC service: a thin driver over QuorumController.

Rules:
- Every command answers with a ``ControllerStatus``: NONE and the metadata
  offset that holds its records, or the refusal's Kafka error code and text;
  NOT_CONTROLLER carries the known active controller in ``leader_id``.
- Nothing here decides anything: requests become ``Controller`` commands run
  through ``QuorumController.run``; the responses are copied out.
- FetchMetadata streams from this controller's committed state (any
  controller, active or not, can serve it).
- Topic ids and placement start indexes are drawn here, the one place
  randomness is allowed (the command itself is pure).
- IncrementalAlterConfigs answers one result per resource (configs.py); a
  refusal of the whole command (NOT_CONTROLLER, a timeout) is the status and
  every resource's result.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from coordinator.metadata import Controller, ControllerResult
from coordinator.metadata.acls import AclBinding
from coordinator.metadata.configs import AlterConfigsResource, ConfigChange, ConfigResource
from coordinator.metadata.records import Endpoint, MetadataRecord, TopicIdPartition
from coordinator.metadata.recovery import LogEnd
from coordinator.metadata.scram import ScramCredential
from coordinator.metadata.snapshot import image_to_records
from coordinator.quorum import NotController, QuorumController, RetainedEntry
from coordinator.quorum_membership import QuorumMembership
from ketch.api.v1 import controller_pb2 as cpb
from ketch.api.v1 import controller_pb2_grpc, metadata_pb2
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError

log = logging.getLogger("ketch.controller.service")
R = TypeVar("R")


def _status(exc: Exception) -> cpb.ControllerStatus:
    if isinstance(exc, NotController):
        return cpb.ControllerStatus(error_code=exc.code.name, error_message=exc.message, leader_id=exc.leader_id)
    if isinstance(exc, KetchError):
        return cpb.ControllerStatus(error_code=exc.code.name, error_message=exc.message, leader_id=-1)
    log.exception("controller command failed")
    return cpb.ControllerStatus(
        error_code=ErrorCode.UNKNOWN_SERVER_ERROR.name, error_message=f"{type(exc).__name__}: {exc}", leader_id=-1
    )


def _create_topic(
    c: Controller, *, topic: pb.NewTopic, configs: Mapping[str, str], topic_id: str, start: int, validate_only: bool
) -> ControllerResult[Any]:
    result = c.create_topic(
        topic.name, topic.num_partitions, topic.replication_factor, configs, topic_id=topic_id, start_index=start
    )
    return ControllerResult([], None) if validate_only else result


def _replica_logs(reports: Iterable[cpb.ReplicaLogReport]) -> dict[TopicIdPartition, LogEnd]:
    """The reports as (latest epoch, log end) per partition; a malformed one refuses the whole request."""
    out = {}
    for r in reports:
        if not r.topic_id or r.partition < 0 or r.latest_epoch < -1 or r.log_end_offset < 0:
            raise KetchError(
                f"replica log report {r.topic_id!r}-{r.partition} (epoch {r.latest_epoch}, end {r.log_end_offset}) "
                "needs a topic id, a partition >= 0, an epoch >= -1 and a log end >= 0",
                code=ErrorCode.INVALID_REQUEST,
            )
        out[TopicIdPartition(r.topic_id, r.partition)] = (r.latest_epoch, r.log_end_offset)
    return out


def _alter_resources(request: pb.IncrementalAlterConfigsRequest) -> list[AlterConfigsResource]:
    out = []
    for r in request.resources:
        changes = []
        for c in r.configs:
            if c.op not in (pb.ALTER_CONFIG_SET, pb.ALTER_CONFIG_DELETE):
                raise KetchError(f"config {c.name!r}: unknown operation {c.op}", code=ErrorCode.INVALID_REQUEST)
            changes.append(ConfigChange(c.name, None if c.op == pb.ALTER_CONFIG_DELETE else c.value))
        out.append(AlterConfigsResource(ConfigResource(r.resource.type, r.resource.name), tuple(changes)))
    return out


class ControllerService(controller_pb2_grpc.KetchControllerServicer):
    def __init__(self, quorum: QuorumController, membership: QuorumMembership) -> None:
        self.quorum = quorum
        self.membership = membership

    async def _run(self, command: Callable[[Controller], ControllerResult[Any]]) -> tuple[Any, cpb.ControllerStatus]:
        try:
            response, offset = await self.quorum.run(command)
        except Exception as exc:
            return None, _status(exc)
        return response, cpb.ControllerStatus(metadata_offset=offset, leader_id=self.quorum.node_id)

    async def RegisterBroker(self, request: cpb.RegisterBrokerRequest, context: Any) -> cpb.RegisterBrokerResponse:
        now = self.quorum.now_ms()
        _, status = await self._run(
            lambda c: c.register_broker(
                request.broker_id,
                request.incarnation_id,
                request.host,
                request.port,
                request.rack,
                now_ms=now,
                clean_shutdown=request.previous_clean_shutdown,
                replica_logs=_replica_logs(request.replica_logs),
                endpoints=[Endpoint(e.name, e.host, e.port, e.security_protocol) for e in request.endpoints],
            )
        )
        # The broker epoch is the offset of the entry holding the registration.
        epoch = status.metadata_offset if status.error_code == 0 else -1
        if epoch >= 0:
            log.info(
                "broker %d registered with epoch %d after a%s shutdown",
                request.broker_id,
                epoch,
                " clean" if request.previous_clean_shutdown else "n unclean",
            )
        return cpb.RegisterBrokerResponse(status=status, broker_epoch=epoch)

    async def BrokerHeartbeat(self, request: cpb.BrokerHeartbeatRequest, context: Any) -> cpb.BrokerHeartbeatResponse:
        now = self.quorum.now_ms()
        response, status = await self._run(
            lambda c: c.broker_heartbeat(
                request.broker_id,
                request.broker_epoch,
                request.metadata_offset,
                now_ms=now,
                replica_logs=_replica_logs(request.replica_logs),
            )
        )
        if response is None:
            return cpb.BrokerHeartbeatResponse(status=status, fenced=True)
        if request.unreachable_brokers:  # its fetch from them failed: probe them now (quorum.py)
            self.quorum.probe_reported(request.unreachable_brokers)
        return cpb.BrokerHeartbeatResponse(
            status=status,
            fenced=response.fenced,
            caught_up=response.caught_up,
            should_shut_down=response.should_shut_down,
        )

    async def ControlledShutdown(
        self, request: cpb.ControlledShutdownRequest, context: Any
    ) -> cpb.ControlledShutdownResponse:
        response, status = await self._run(lambda c: c.shutdown_broker(request.broker_id, request.broker_epoch))
        return cpb.ControlledShutdownResponse(status=status, leaders_moved=response.leaders_moved if response else 0)

    async def AlterPartition(self, request: cpb.AlterPartitionRequest, context: Any) -> cpb.AlterPartitionResponse:
        response, status = await self._run(
            lambda c: c.alter_partition(
                request.broker_id,
                request.broker_epoch,
                request.topic_id,
                request.partition,
                leader_epoch=request.leader_epoch,
                partition_epoch=request.partition_epoch,
                new_isr=list(request.new_isr),
                isr_broker_epochs=dict(request.isr_broker_epochs) or None,
            )
        )
        if response is None:
            return cpb.AlterPartitionResponse(status=status)
        state = response.state
        return cpb.AlterPartitionResponse(
            status=status,
            leader=state.leader,
            leader_epoch=state.leader_epoch,
            partition_epoch=state.partition_epoch,
            isr=list(state.isr),
        )

    async def _each_topic(
        self, commands: Iterable[tuple[str, Callable[[Controller], ControllerResult[Any]]]]
    ) -> cpb.ControllerTopicsResponse:
        """One command per topic, in order, each with its own result; NOT_CONTROLLER stops them all.
        The status carries the offset of the last command that succeeded."""
        out = cpb.ControllerTopicsResponse()
        last = cpb.ControllerStatus(leader_id=self.quorum.node_id)
        for name, command in commands:
            _, status = await self._run(command)
            out.topics.add(name=name, error_code=status.error_code, error_message=status.error_message)
            if status.error_code == ErrorCode.NOT_CONTROLLER:
                out.status.CopyFrom(status)
                return out
            if status.error_code == 0:
                last = status
        out.status.CopyFrom(last)
        return out

    async def CreateTopics(self, request: pb.CreateTopicsRequest, context: Any) -> cpb.ControllerTopicsResponse:
        return await self._each_topic(
            (
                topic.name,
                functools.partial(
                    _create_topic,
                    topic=topic,
                    configs=dict(topic.configs),
                    topic_id=uuid.uuid4().hex,
                    start=random.randrange(1 << 16),
                    validate_only=request.validate_only,
                ),
            )
            for topic in request.topics
        )

    async def DeleteTopics(self, request: pb.DeleteTopicsRequest, context: Any) -> cpb.ControllerTopicsResponse:
        return await self._each_topic(
            (name, functools.partial(Controller.delete_topic, name=name)) for name in request.names
        )

    async def CreatePartitions(self, request: pb.CreatePartitionsRequest, context: Any) -> cpb.ControllerTopicsResponse:
        return await self._each_topic(
            (
                topic.name,
                functools.partial(
                    Controller.create_partitions,
                    name=topic.name,
                    total=topic.count,
                    validate_only=request.validate_only,
                ),
            )
            for topic in request.topics
        )

    async def IncrementalAlterConfigs(
        self, request: pb.IncrementalAlterConfigsRequest, context: Any
    ) -> cpb.ControllerAlterConfigsResponse:
        response, status = await self._run(
            lambda c: c.incremental_alter_configs(_alter_resources(request), request.validate_only)
        )
        out = cpb.ControllerAlterConfigsResponse(status=status)
        if response is None:
            for r in request.resources:
                out.results.add(resource=r.resource, error_code=status.error_code, error_message=status.error_message)
            return out
        for result, r in zip(response.results, request.resources, strict=True):
            out.results.add(resource=r.resource, error_code=result.error_code, error_message=result.error_message)
        return out

    async def CreateAcls(self, request: pb.CreateAclsRequest, context: Any) -> cpb.ControllerCreateAclsResponse:
        creations = [AclBinding.from_pb(b) for b in request.creations]
        ids = [uuid.uuid4().hex for _ in creations]
        results, status = await self._run(lambda c: c.create_acls(creations, ids))
        out = cpb.ControllerCreateAclsResponse(status=status)
        for code, message in results or [(status.error_code, status.error_message)] * len(creations):
            out.results.add(error_code=code, error_message=message)
        return out

    async def DeleteAcls(self, request: pb.DeleteAclsRequest, context: Any) -> cpb.ControllerDeleteAclsResponse:
        filters = [AclBinding.from_pb(f) for f in request.filters]
        matched, status = await self._run(lambda c: c.delete_acls(filters))
        out = cpb.ControllerDeleteAclsResponse(status=status)
        for found in matched or [None] * len(filters):
            result = out.results.add(error_code=status.error_code, error_message=status.error_message)
            result.matching.extend(acl.to_pb() for acl in found or ())
        return out

    async def AlterUserScramCredentials(
        self, request: pb.AlterUserScramCredentialsRequest, context: Any
    ) -> cpb.ControllerScramResponse:
        deletions = [(d.name, d.mechanism) for d in request.deletions]
        upsertions = [
            ScramCredential(u.name, u.mechanism, u.salt, u.stored_key, u.server_key, u.iterations)
            for u in request.upsertions
        ]
        results, status = await self._run(lambda c: c.alter_scram_credentials(deletions, upsertions))
        out = cpb.ControllerScramResponse(status=status)
        names = [name for name, _ in deletions] + [u.name for u in upsertions]
        for user, code, message in results or [(n, status.error_code, status.error_message) for n in names]:
            out.results.add(user=user, error_code=code, error_message=message)
        return out

    async def AllocateProducerIds(
        self, request: cpb.AllocateProducerIdsRequest, context: Any
    ) -> cpb.AllocateProducerIdsResponse:
        block, status = await self._run(lambda c: c.allocate_producer_ids(request.broker_id, request.broker_epoch))
        if block is None:
            return cpb.AllocateProducerIdsResponse(status=status)
        log.info("producer ids [%d, %d) go to broker %d", block.first, block.next_block_first, block.broker_id)
        return cpb.AllocateProducerIdsResponse(status=status, producer_id_start=block.first, producer_id_len=block.size)

    async def ElectLeaders(self, request: cpb.ElectLeadersRequest, context: Any) -> cpb.ElectLeadersResponse:
        wanted = [(p.topic, p.partition) for p in request.partitions] or None
        response, status = await self._run(lambda c: c.elect_preferred_leaders(wanted))
        out = cpb.ElectLeadersResponse(status=status)
        if response is not None:
            for (topic, partition), code in sorted(response.results.items()):
                out.results.add(topic=topic, partition=partition, error_code=code)
        return out

    async def AlterPartitionReassignments(
        self, request: pb.AlterPartitionReassignmentsRequest, context: Any
    ) -> cpb.ControllerReassignmentsResponse:
        wanted = [(p.topic, p.partition, None if p.cancel else list(p.replicas)) for p in request.partitions]
        response, status = await self._run(lambda c: c.alter_partition_reassignments(wanted))
        out = cpb.ControllerReassignmentsResponse(status=status)
        if response is not None:
            for r in response.results:
                out.results.add(topic=r.topic, partition=r.partition, error_code=r.error, error_message=r.message)
            started = [f"{r.topic}-{r.partition}" for r in response.results if r.error == ErrorCode.NONE]
            if started:
                log.info("reassignments started or cancelled: %s", started)
        return out

    async def FetchMetadata(self, request: cpb.FetchMetadataRequest, context: Any) -> AsyncIterator[cpb.MetadataUpdate]:
        async for kind, item in self.quorum.follow(request.offset):
            if kind == "snapshot":
                yield cpb.MetadataUpdate(
                    snapshot=metadata_pb2.MetadataSnapshot(offset=item.offset, records=image_to_records(item))
                )
            else:
                entry: RetainedEntry = item
                records: list[MetadataRecord] = list(entry.records)
                yield cpb.MetadataUpdate(
                    entry=cpb.MetadataEntry(offset=entry.offset, batch=metadata_pb2.MetadataBatch(records=records))
                )

    async def DescribeQuorum(self, request: cpb.DescribeQuorumRequest, context: Any) -> cpb.DescribeQuorumResponse:
        status = self.quorum.raft_status()
        image = self.quorum.image
        out = cpb.DescribeQuorumResponse(
            node_id=self.quorum.node_id,
            leader_id=status.leader,
            term=status.term,
            commit_index=status.commit,
            applied_index=status.applied,
            voters=self.membership.describe_voters(),
            observers=self.membership.describe_observers(),
            directory_id=status.directory,
            is_voter=status.is_voter,
        )
        for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
            out.brokers.add(
                broker_id=broker.broker_id,
                host=broker.host,
                port=broker.port,
                rack=broker.rack,
                broker_epoch=broker.epoch,
                fenced=broker.fenced,
                endpoints=[metadata_pb2.BrokerEndpoint(**e._asdict()) for e in broker.endpoints],
            )
        return out

    async def AddRaftVoter(self, request: cpb.AddRaftVoterRequest, context: Any) -> cpb.RaftVoterChangeResponse:
        return await self.membership.add_voter(request)

    async def RemoveRaftVoter(self, request: cpb.RemoveRaftVoterRequest, context: Any) -> cpb.RaftVoterChangeResponse:
        return await self.membership.remove_voter(request)
