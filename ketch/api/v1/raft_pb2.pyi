from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RaftMessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RAFT_MESSAGE_TYPE_UNSPECIFIED: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_APP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_APP_RESP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_VOTE: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_VOTE_RESP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_PRE_VOTE: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_PRE_VOTE_RESP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_HEARTBEAT: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_HEARTBEAT_RESP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_SNAP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_READ_INDEX: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_READ_INDEX_RESP: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_TIMEOUT_NOW: _ClassVar[RaftMessageType]
    RAFT_MESSAGE_TYPE_OBSERVE: _ClassVar[RaftMessageType]

class RaftEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RAFT_ENTRY_KIND_NORMAL: _ClassVar[RaftEntryKind]
    RAFT_ENTRY_KIND_NOOP: _ClassVar[RaftEntryKind]
    RAFT_ENTRY_KIND_CONF: _ClassVar[RaftEntryKind]
RAFT_MESSAGE_TYPE_UNSPECIFIED: RaftMessageType
RAFT_MESSAGE_TYPE_APP: RaftMessageType
RAFT_MESSAGE_TYPE_APP_RESP: RaftMessageType
RAFT_MESSAGE_TYPE_VOTE: RaftMessageType
RAFT_MESSAGE_TYPE_VOTE_RESP: RaftMessageType
RAFT_MESSAGE_TYPE_PRE_VOTE: RaftMessageType
RAFT_MESSAGE_TYPE_PRE_VOTE_RESP: RaftMessageType
RAFT_MESSAGE_TYPE_HEARTBEAT: RaftMessageType
RAFT_MESSAGE_TYPE_HEARTBEAT_RESP: RaftMessageType
RAFT_MESSAGE_TYPE_SNAP: RaftMessageType
RAFT_MESSAGE_TYPE_READ_INDEX: RaftMessageType
RAFT_MESSAGE_TYPE_READ_INDEX_RESP: RaftMessageType
RAFT_MESSAGE_TYPE_TIMEOUT_NOW: RaftMessageType
RAFT_MESSAGE_TYPE_OBSERVE: RaftMessageType
RAFT_ENTRY_KIND_NORMAL: RaftEntryKind
RAFT_ENTRY_KIND_NOOP: RaftEntryKind
RAFT_ENTRY_KIND_CONF: RaftEntryKind

class RaftVoter(_message.Message):
    __slots__ = ("id", "directory", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: int
    directory: str
    address: str
    def __init__(self, id: _Optional[int] = ..., directory: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class RaftEntry(_message.Message):
    __slots__ = ("term", "index", "data", "kind", "voters")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    data: bytes
    kind: RaftEntryKind
    voters: _containers.RepeatedCompositeFieldContainer[RaftVoter]
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ..., kind: _Optional[_Union[RaftEntryKind, str]] = ..., voters: _Optional[_Iterable[_Union[RaftVoter, _Mapping]]] = ...) -> None: ...

class RaftHardState(_message.Message):
    __slots__ = ("term", "vote", "commit")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote: int
    commit: int
    def __init__(self, term: _Optional[int] = ..., vote: _Optional[int] = ..., commit: _Optional[int] = ...) -> None: ...

class RaftSnapshot(_message.Message):
    __slots__ = ("index", "term", "voters", "data", "voter_set")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VOTER_SET_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    voter_set: _containers.RepeatedCompositeFieldContainer[RaftVoter]
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., voter_set: _Optional[_Iterable[_Union[RaftVoter, _Mapping]]] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("type", "frm", "to", "term", "log_term", "index", "entries", "commit", "reject", "reject_hint", "snapshot", "context", "directory", "to_directory")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FRM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    TO_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    type: RaftMessageType
    frm: int
    to: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[RaftEntry]
    commit: int
    reject: bool
    reject_hint: int
    snapshot: RaftSnapshot
    context: bytes
    directory: str
    to_directory: str
    def __init__(self, type: _Optional[_Union[RaftMessageType, str]] = ..., frm: _Optional[int] = ..., to: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[RaftEntry, _Mapping]]] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., snapshot: _Optional[_Union[RaftSnapshot, _Mapping]] = ..., context: _Optional[bytes] = ..., directory: _Optional[str] = ..., to_directory: _Optional[str] = ...) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("messages", "sender", "sender_address")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SENDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    sender: int
    sender_address: str
    def __init__(self, messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ..., sender: _Optional[int] = ..., sender_address: _Optional[str] = ...) -> None: ...

class StepAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
