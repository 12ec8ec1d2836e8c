"""Error codes and exceptions shared by the broker and the client.

Codes are Kafka's protocol error codes (the same numbers as the ``ErrorCode``
enum in ``proto/ketch/api/v1/ketch.proto``; a test keeps them equal). The
broker puts a code and a readable message in each per-partition result; the
client turns a non-NONE code into the matching ``KetchError`` subclass.

``retriable`` follows Kafka's ``RetriableException``: the producer retries
only those (with backoff, after refreshing metadata where the error says the
metadata is stale); everything else fails the send at once.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    NONE = 0
    UNKNOWN_SERVER_ERROR = -1
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    OFFSET_METADATA_TOO_LARGE = 12
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TOPIC_AUTHORIZATION_FAILED = 29
    UNSUPPORTED_SASL_MECHANISM = 33
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    SECURITY_DISABLED = 54
    KAFKA_STORAGE_ERROR = 56
    SASL_AUTHENTICATION_FAILED = 58
    UNKNOWN_PRODUCER_ID = 59
    REASSIGNMENT_IN_PROGRESS = 60
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FETCH_SESSION_ID_NOT_FOUND = 70
    INVALID_FETCH_SESSION_EPOCH = 71
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    STALE_BROKER_EPOCH = 77
    PREFERRED_LEADER_NOT_AVAILABLE = 80
    ELECTION_NOT_NEEDED = 84
    NO_REASSIGNMENT_IN_PROGRESS = 85
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    THROTTLING_QUOTA_EXCEEDED = 89
    PRODUCER_FENCED = 90
    INVALID_UPDATE_VERSION = 95
    UNKNOWN_TOPIC_ID = 100
    BROKER_ID_NOT_REGISTERED = 102
    NEW_LEADER_ELECTED = 106
    INELIGIBLE_REPLICA = 107
    DUPLICATE_VOTER = 126
    RESOURCE_NOT_FOUND = 91
    VOTER_NOT_FOUND = 127


RETRIABLE = frozenset(
    {
        ErrorCode.CORRUPT_MESSAGE,  # Kafka retries it: the bytes may have been damaged in flight
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.CONCURRENT_TRANSACTIONS,
        ErrorCode.UNSTABLE_OFFSET_COMMIT,
        ErrorCode.THROTTLING_QUOTA_EXCEEDED,  # a node's request limit: back off and try again
    }
)

# Errors after which the client's cached metadata is likely stale.
REFRESH_METADATA = frozenset(
    {
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
    }
)


class KetchError(Exception):
    """An error with a Kafka error code and a message a person can act on."""

    code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(self, message: str = "", code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(f"{self.code.name}: {message}" if message else self.code.name)
        self.message = message

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE


class OffsetOutOfRangeError(KetchError):
    code = ErrorCode.OFFSET_OUT_OF_RANGE


class CorruptMessageError(KetchError):
    code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicOrPartitionError(KetchError):
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class NotLeaderOrFollowerError(KetchError):
    code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class RequestTimedOutError(KetchError):
    code = ErrorCode.REQUEST_TIMED_OUT


class MessageTooLargeError(KetchError):
    code = ErrorCode.MESSAGE_TOO_LARGE


class InvalidTopicError(KetchError):
    code = ErrorCode.INVALID_TOPIC_EXCEPTION


class AuthenticationFailedError(KetchError):
    """The node and the client could not authenticate each other (a TLS handshake refused: an
    untrusted certificate, a host name the certificate does not name); not retriable: Kafka's
    SslAuthenticationException."""

    code = ErrorCode.SASL_AUTHENTICATION_FAILED


class TopicAuthorizationFailedError(KetchError):
    code = ErrorCode.TOPIC_AUTHORIZATION_FAILED


class GroupAuthorizationFailedError(KetchError):
    code = ErrorCode.GROUP_AUTHORIZATION_FAILED


class ClusterAuthorizationFailedError(KetchError):
    code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED


class TransactionalIdAuthorizationFailedError(KetchError):
    code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


class NotEnoughReplicasError(KetchError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS


class TopicAlreadyExistsError(KetchError):
    code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidConfigError(KetchError):
    code = ErrorCode.INVALID_CONFIG


class InvalidRequestError(KetchError):
    code = ErrorCode.INVALID_REQUEST


class RequestLimitError(KetchError):
    """The node refused the request because one of its in-flight limits is full
    (node/request_limits.py; the message names the setting); retriable after a backoff."""

    code = ErrorCode.THROTTLING_QUOTA_EXCEEDED


class KetchConnectionError(KetchError):
    """No broker answered (transport level); retriable."""

    code = ErrorCode.REQUEST_TIMED_OUT


_BY_CODE: dict[ErrorCode, type[KetchError]] = {
    cls.code: cls
    for cls in (
        OffsetOutOfRangeError,
        CorruptMessageError,
        UnknownTopicOrPartitionError,
        NotLeaderOrFollowerError,
        RequestTimedOutError,
        MessageTooLargeError,
        InvalidTopicError,
        NotEnoughReplicasError,
        AuthenticationFailedError,
        TopicAuthorizationFailedError,
        GroupAuthorizationFailedError,
        ClusterAuthorizationFailedError,
        TransactionalIdAuthorizationFailedError,
        TopicAlreadyExistsError,
        InvalidConfigError,
        InvalidRequestError,
        RequestLimitError,
    )
}


def error_for(code: int, message: str = "") -> KetchError:
    """The exception for a non-NONE error code received from a broker."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return KetchError(f"unknown error code {code}: {message}")
    cls = _BY_CODE.get(known)
    if cls is None:
        return KetchError(message, code=known)
    return cls(message)
