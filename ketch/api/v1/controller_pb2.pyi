from ketch.api.v1 import ketch_pb2 as _ketch_pb2
from ketch.api.v1 import metadata_pb2 as _metadata_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControllerStatus(_message.Message):
    __slots__ = ("error_code", "error_message", "leader_id", "metadata_offset")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_OFFSET_FIELD_NUMBER: _ClassVar[int]
    error_code: _ketch_pb2.ErrorCode
    error_message: str
    leader_id: int
    metadata_offset: int
    def __init__(self, error_code: _Optional[_Union[_ketch_pb2.ErrorCode, str]] = ..., error_message: _Optional[str] = ..., leader_id: _Optional[int] = ..., metadata_offset: _Optional[int] = ...) -> None: ...

class RegisterBrokerRequest(_message.Message):
    __slots__ = ("broker_id", "incarnation_id", "host", "port", "rack", "previous_clean_shutdown", "replica_logs", "endpoints")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CLEAN_SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    REPLICA_LOGS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    incarnation_id: str
    host: str
    port: int
    rack: str
    previous_clean_shutdown: bool
    replica_logs: _containers.RepeatedCompositeFieldContainer[ReplicaLogReport]
    endpoints: _containers.RepeatedCompositeFieldContainer[_metadata_pb2.BrokerEndpoint]
    def __init__(self, broker_id: _Optional[int] = ..., incarnation_id: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., rack: _Optional[str] = ..., previous_clean_shutdown: _Optional[bool] = ..., replica_logs: _Optional[_Iterable[_Union[ReplicaLogReport, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[_metadata_pb2.BrokerEndpoint, _Mapping]]] = ...) -> None: ...

class ReplicaLogReport(_message.Message):
    __slots__ = ("topic_id", "partition", "latest_epoch", "log_end_offset")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LATEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOG_END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic_id: str
    partition: int
    latest_epoch: int
    log_end_offset: int
    def __init__(self, topic_id: _Optional[str] = ..., partition: _Optional[int] = ..., latest_epoch: _Optional[int] = ..., log_end_offset: _Optional[int] = ...) -> None: ...

class RegisterBrokerResponse(_message.Message):
    __slots__ = ("status", "broker_epoch")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    broker_epoch: int
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., broker_epoch: _Optional[int] = ...) -> None: ...

class BrokerHeartbeatRequest(_message.Message):
    __slots__ = ("broker_id", "broker_epoch", "metadata_offset", "replica_logs", "unreachable_brokers")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    METADATA_OFFSET_FIELD_NUMBER: _ClassVar[int]
    REPLICA_LOGS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_BROKERS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    broker_epoch: int
    metadata_offset: int
    replica_logs: _containers.RepeatedCompositeFieldContainer[ReplicaLogReport]
    unreachable_brokers: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, broker_id: _Optional[int] = ..., broker_epoch: _Optional[int] = ..., metadata_offset: _Optional[int] = ..., replica_logs: _Optional[_Iterable[_Union[ReplicaLogReport, _Mapping]]] = ..., unreachable_brokers: _Optional[_Iterable[int]] = ...) -> None: ...

class BrokerHeartbeatResponse(_message.Message):
    __slots__ = ("status", "fenced", "caught_up", "should_shut_down")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    SHOULD_SHUT_DOWN_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    fenced: bool
    caught_up: bool
    should_shut_down: bool
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., fenced: _Optional[bool] = ..., caught_up: _Optional[bool] = ..., should_shut_down: _Optional[bool] = ...) -> None: ...

class ControlledShutdownRequest(_message.Message):
    __slots__ = ("broker_id", "broker_epoch")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    broker_epoch: int
    def __init__(self, broker_id: _Optional[int] = ..., broker_epoch: _Optional[int] = ...) -> None: ...

class ControlledShutdownResponse(_message.Message):
    __slots__ = ("status", "leaders_moved")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEADERS_MOVED_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    leaders_moved: int
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., leaders_moved: _Optional[int] = ...) -> None: ...

class AlterPartitionRequest(_message.Message):
    __slots__ = ("broker_id", "broker_epoch", "topic_id", "partition", "leader_epoch", "partition_epoch", "new_isr", "isr_broker_epochs")
    class IsrBrokerEpochsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEW_ISR_FIELD_NUMBER: _ClassVar[int]
    ISR_BROKER_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    broker_epoch: int
    topic_id: str
    partition: int
    leader_epoch: int
    partition_epoch: int
    new_isr: _containers.RepeatedScalarFieldContainer[int]
    isr_broker_epochs: _containers.ScalarMap[int, int]
    def __init__(self, broker_id: _Optional[int] = ..., broker_epoch: _Optional[int] = ..., topic_id: _Optional[str] = ..., partition: _Optional[int] = ..., leader_epoch: _Optional[int] = ..., partition_epoch: _Optional[int] = ..., new_isr: _Optional[_Iterable[int]] = ..., isr_broker_epochs: _Optional[_Mapping[int, int]] = ...) -> None: ...

class AlterPartitionResponse(_message.Message):
    __slots__ = ("status", "leader", "leader_epoch", "partition_epoch", "isr")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    leader: int
    leader_epoch: int
    partition_epoch: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., leader: _Optional[int] = ..., leader_epoch: _Optional[int] = ..., partition_epoch: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ...) -> None: ...

class ControllerTopicsResponse(_message.Message):
    __slots__ = ("status", "topics")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    topics: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.TopicResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., topics: _Optional[_Iterable[_Union[_ketch_pb2.TopicResult, _Mapping]]] = ...) -> None: ...

class ControllerAlterConfigsResponse(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    results: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.AlterConfigsResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_ketch_pb2.AlterConfigsResult, _Mapping]]] = ...) -> None: ...

class ControllerCreateAclsResponse(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    results: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.AclResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_ketch_pb2.AclResult, _Mapping]]] = ...) -> None: ...

class ControllerDeleteAclsResponse(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    results: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.DeleteAclsFilterResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_ketch_pb2.DeleteAclsFilterResult, _Mapping]]] = ...) -> None: ...

class ControllerScramResponse(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    results: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.AlterUserScramCredentialsResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_ketch_pb2.AlterUserScramCredentialsResult, _Mapping]]] = ...) -> None: ...

class ControllerReassignmentsResponse(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    results: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.ReassignmentResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_ketch_pb2.ReassignmentResult, _Mapping]]] = ...) -> None: ...

class ElectLeadersRequest(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[_ketch_pb2.TopicPartitionRef]
    def __init__(self, partitions: _Optional[_Iterable[_Union[_ketch_pb2.TopicPartitionRef, _Mapping]]] = ...) -> None: ...

class ElectLeadersResponse(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    results: _containers.RepeatedCompositeFieldContainer[ElectLeaderResult]
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[ElectLeaderResult, _Mapping]]] = ...) -> None: ...

class ElectLeaderResult(_message.Message):
    __slots__ = ("topic", "partition", "error_code")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    error_code: _ketch_pb2.ErrorCode
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., error_code: _Optional[_Union[_ketch_pb2.ErrorCode, str]] = ...) -> None: ...

class FetchMetadataRequest(_message.Message):
    __slots__ = ("broker_id", "offset")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    offset: int
    def __init__(self, broker_id: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class MetadataUpdate(_message.Message):
    __slots__ = ("snapshot", "entry")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    snapshot: _metadata_pb2.MetadataSnapshot
    entry: MetadataEntry
    def __init__(self, snapshot: _Optional[_Union[_metadata_pb2.MetadataSnapshot, _Mapping]] = ..., entry: _Optional[_Union[MetadataEntry, _Mapping]] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ("offset", "batch")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    offset: int
    batch: _metadata_pb2.MetadataBatch
    def __init__(self, offset: _Optional[int] = ..., batch: _Optional[_Union[_metadata_pb2.MetadataBatch, _Mapping]] = ...) -> None: ...

class DescribeQuorumRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeQuorumResponse(_message.Message):
    __slots__ = ("node_id", "leader_id", "term", "commit_index", "applied_index", "voters", "brokers", "observers", "directory_id", "is_voter")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    OBSERVERS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    IS_VOTER_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    leader_id: int
    term: int
    commit_index: int
    applied_index: int
    voters: _containers.RepeatedCompositeFieldContainer[QuorumVoter]
    brokers: _containers.RepeatedCompositeFieldContainer[BrokerState]
    observers: _containers.RepeatedCompositeFieldContainer[QuorumVoter]
    directory_id: str
    is_voter: bool
    def __init__(self, node_id: _Optional[int] = ..., leader_id: _Optional[int] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., voters: _Optional[_Iterable[_Union[QuorumVoter, _Mapping]]] = ..., brokers: _Optional[_Iterable[_Union[BrokerState, _Mapping]]] = ..., observers: _Optional[_Iterable[_Union[QuorumVoter, _Mapping]]] = ..., directory_id: _Optional[str] = ..., is_voter: _Optional[bool] = ...) -> None: ...

class QuorumVoter(_message.Message):
    __slots__ = ("node_id", "address", "match_index", "directory_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    match_index: int
    directory_id: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., match_index: _Optional[int] = ..., directory_id: _Optional[str] = ...) -> None: ...

class AddRaftVoterRequest(_message.Message):
    __slots__ = ("node_id", "address", "timeout_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    timeout_ms: int
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class RemoveRaftVoterRequest(_message.Message):
    __slots__ = ("node_id", "timeout_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    timeout_ms: int
    def __init__(self, node_id: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class RaftVoterChangeResponse(_message.Message):
    __slots__ = ("error_code", "error_message", "leader_id", "index", "voters")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    error_code: int
    error_message: str
    leader_id: int
    index: int
    voters: _containers.RepeatedCompositeFieldContainer[QuorumVoter]
    def __init__(self, error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., leader_id: _Optional[int] = ..., index: _Optional[int] = ..., voters: _Optional[_Iterable[_Union[QuorumVoter, _Mapping]]] = ...) -> None: ...

class BrokerState(_message.Message):
    __slots__ = ("broker_id", "host", "port", "rack", "broker_epoch", "fenced", "endpoints")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    host: str
    port: int
    rack: str
    broker_epoch: int
    fenced: bool
    endpoints: _containers.RepeatedCompositeFieldContainer[_metadata_pb2.BrokerEndpoint]
    def __init__(self, broker_id: _Optional[int] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., rack: _Optional[str] = ..., broker_epoch: _Optional[int] = ..., fenced: _Optional[bool] = ..., endpoints: _Optional[_Iterable[_Union[_metadata_pb2.BrokerEndpoint, _Mapping]]] = ...) -> None: ...

class AllocateProducerIdsRequest(_message.Message):
    __slots__ = ("broker_id", "broker_epoch")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    broker_epoch: int
    def __init__(self, broker_id: _Optional[int] = ..., broker_epoch: _Optional[int] = ...) -> None: ...

class AllocateProducerIdsResponse(_message.Message):
    __slots__ = ("status", "producer_id_start", "producer_id_len")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_START_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_LEN_FIELD_NUMBER: _ClassVar[int]
    status: ControllerStatus
    producer_id_start: int
    producer_id_len: int
    def __init__(self, status: _Optional[_Union[ControllerStatus, _Mapping]] = ..., producer_id_start: _Optional[int] = ..., producer_id_len: _Optional[int] = ...) -> None: ...
