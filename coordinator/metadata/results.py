"""What controller commands return: records to commit, and a response for the caller.

Kafka's ``ControllerResult``: a command computes, from the current image,
the records that express its decision and the response the caller should
get once those records are committed. It changes nothing itself; replaying
the records does (delta.py). A refused command raises a ``KetchError`` with
the Kafka error code instead, and writes nothing.

Responses describe the state *after* the records are replayed; the driver
sends a response only once its records — and, for an empty result, every
record this controller has written before it — are committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from coordinator.metadata.image import PartitionRegistration
from coordinator.metadata.records import MetadataRecord
from ketch.errors import ErrorCode

R = TypeVar("R")


@dataclass(frozen=True)
class ControllerResult(Generic[R]):
    records: list[MetadataRecord]
    response: R


@dataclass(frozen=True)
class ControllerConfig:
    # Kafka's broker.session.timeout.ms: fence a broker not heard from for this long.
    broker_session_timeout_ms: int = 9000
    # Probe a broker silent this long (no heartbeat) and fence it at once if its listener refuses the
    # connection (brokers.py fence_unreachable); 0: never probe, wait for the session.
    broker_liveness_probe_ms: int = 0
    # A newly active controller fences a broker it has not heard from within this long (sessions.py); 0:
    # the whole session.
    broker_first_contact_ms: int = 0
    # The node's max_request_bytes: the ceiling for a topic's max.message.bytes.
    max_request_bytes: int = 64 * 1024 * 1024
    # The brokers' min.insync.replicas default: the ISR floor (election.py) for topics without their own,
    # unless a cluster-wide dynamic min.insync.replicas is set (configs.py).
    min_insync_replicas: int = 1


@dataclass(frozen=True)
class RegisterBrokerResponse:
    """The broker epoch is the offset the batch is committed at: the driver
    learns it when it appends the batch to Raft and replies once it commits."""

    broker_id: int
    incarnation_id: str
    # The old registration of this id that was fenced to make way, if it was live.
    replaced_epoch: int | None = None


@dataclass(frozen=True)
class HeartbeatResponse:
    broker_id: int
    broker_epoch: int
    fenced: bool  # after this heartbeat's records, if any, are applied
    caught_up: bool  # the broker's metadata offset has reached its registration
    should_shut_down: bool = False  # the registration ended in a controlled shutdown


@dataclass(frozen=True)
class TickResponse:
    fenced: tuple[int, ...] = ()  # brokers whose session expired
    recovered: tuple[tuple[str, int, int], ...] = ()  # (topic id, partition, leader) out of unclean recovery


@dataclass(frozen=True)
class ShutdownResponse:
    broker_id: int
    broker_epoch: int
    leaders_moved: int  # partitions it led that got another leader (or went offline)


@dataclass(frozen=True)
class CreateTopicResponse:
    topic_id: str
    name: str
    configs: Mapping[str, str]
    partitions: Mapping[int, PartitionRegistration]


@dataclass(frozen=True)
class CreatePartitionsResponse:
    topic_id: str
    name: str
    partitions: Mapping[int, PartitionRegistration]  # the new partitions only


@dataclass(frozen=True)
class DeleteTopicResponse:
    topic_id: str
    name: str


@dataclass(frozen=True)
class AlterPartitionResponse:
    topic_id: str
    partition: int
    state: PartitionRegistration  # leader, leader epoch, ISR, partition epoch after the change


@dataclass(frozen=True)
class ElectLeadersResponse:
    # (topic name, partition) -> NONE (elected), ELECTION_NOT_NEEDED,
    # PREFERRED_LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION
    results: Mapping[tuple[str, int], ErrorCode] = field(default_factory=dict)
