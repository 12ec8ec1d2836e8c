"""Metadata records: constructors, the Raft entry codec, and partition keys.

The records themselves are the protobuf messages of
``proto/ketch/api/v1/metadata.proto``; this module only builds them with
keyword arguments (so call sites read like the record they write) and turns
a batch of them into the bytes of one Raft entry and back.

Rules:
- One Raft entry = one ``MetadataBatch`` = the records of one controller
  command. Raft commits an entry whole or not at all, so a command's records
  (a TopicRecord and its PartitionRecords, a fence and the leader moves it
  causes) are never half-applied. Every record in the batch has the entry's
  Raft index as its metadata offset.
- Encoding is deterministic (map fields sorted), so equal batches and equal
  snapshots are equal bytes.
- Decoding never runs code: it is protobuf parsing only. Bytes that do not
  parse raise ``ValueError``.
- A ``ConfigRecord`` names its resource by Kafka's ConfigResource type
  number (``TOPIC_RESOURCE`` 2: a topic name; ``BROKER_RESOURCE`` 4: a node
  id, or ``CLUSTER_WIDE`` "" for every broker); a value of None deletes the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError

from ketch.api.v1 import metadata_pb2 as pb

MetadataRecord = pb.MetadataRecord

NO_LEADER = -1
TOPIC_RESOURCE = 2  # Kafka's ConfigResource.Type.TOPIC
BROKER_RESOURCE = 4  # Kafka's ConfigResource.Type.BROKER
CLUSTER_WIDE = ""  # the broker resource name that means every broker (a dynamic default)


class TopicIdPartition(NamedTuple):
    """A partition named by its topic's id (stable across topic re-creation)."""

    topic_id: str
    partition: int


class Endpoint(NamedTuple):
    """One advertised listener of a broker (node/listeners.py)."""

    name: str
    host: str
    port: int
    security_protocol: str


def register_broker(
    broker_id: int,
    incarnation_id: str,
    host: str,
    port: int,
    rack: str = "",
    broker_epoch: int | None = None,
    endpoints: Sequence[Endpoint] = (),
) -> MetadataRecord:
    rec = pb.RegisterBrokerRecord(broker_id=broker_id, incarnation_id=incarnation_id, host=host, port=port, rack=rack)
    for e in endpoints:
        rec.endpoints.add(name=e.name, host=e.host, port=e.port, security_protocol=e.security_protocol)
    if broker_epoch is not None:
        rec.broker_epoch = broker_epoch
    return MetadataRecord(register_broker=rec)


def broker_fence(broker_id: int, broker_epoch: int, fenced: bool, shut_down: bool = False) -> MetadataRecord:
    return MetadataRecord(
        broker_fence=pb.BrokerFenceRecord(
            broker_id=broker_id, broker_epoch=broker_epoch, fenced=fenced, shut_down=shut_down
        )
    )


def topic(name: str, topic_id: str, configs: Mapping[str, str]) -> MetadataRecord:
    return MetadataRecord(topic=pb.TopicRecord(name=name, topic_id=topic_id, configs=dict(configs)))


def partition(
    topic_id: str,
    partition: int,
    replicas: Sequence[int],
    isr: Sequence[int],
    leader: int,
    leader_epoch: int = 0,
    partition_epoch: int = 0,
    recovering: bool = False,
    adding: Sequence[int] = (),
    removing: Sequence[int] = (),
) -> MetadataRecord:
    return MetadataRecord(
        partition=pb.PartitionRecord(
            topic_id=topic_id,
            partition=partition,
            replicas=list(replicas),
            isr=list(isr),
            leader=leader,
            leader_epoch=leader_epoch,
            partition_epoch=partition_epoch,
            recovering=recovering,
            adding_replicas=list(adding),
            removing_replicas=list(removing),
        )
    )


def partition_change(
    topic_id: str,
    partition: int,
    leader: int | None = None,
    isr: Sequence[int] | None = None,
    recovering: bool | None = None,
    *,
    replicas: Sequence[int] | None = None,
    adding: Sequence[int] | None = None,
    removing: Sequence[int] | None = None,
) -> MetadataRecord:
    rec = pb.PartitionChangeRecord(topic_id=topic_id, partition=partition)
    if leader is not None:
        rec.leader = leader
    if isr is not None:
        rec.isr.CopyFrom(pb.IntList(values=list(isr)))
    if recovering is not None:
        rec.recovering = recovering
    for name, values in (("replicas", replicas), ("adding_replicas", adding), ("removing_replicas", removing)):
        if values is not None:
            getattr(rec, name).CopyFrom(pb.IntList(values=list(values)))
    return MetadataRecord(partition_change=rec)


def remove_topic(topic_id: str) -> MetadataRecord:
    return MetadataRecord(remove_topic=pb.RemoveTopicRecord(topic_id=topic_id))


def no_op(controller_id: int) -> MetadataRecord:
    return MetadataRecord(no_op=pb.NoOpRecord(controller_id=controller_id))


def producer_ids(broker_id: int, broker_epoch: int, next_producer_id: int) -> MetadataRecord:
    return MetadataRecord(
        producer_ids=pb.ProducerIdsRecord(
            broker_id=broker_id, broker_epoch=broker_epoch, next_producer_id=next_producer_id
        )
    )


def config(resource_type: int, resource_name: str, name: str, value: str | None) -> MetadataRecord:
    """Set (``value``) or delete (None) one config key of a topic or of the brokers."""
    rec = pb.ConfigRecord(resource_type=resource_type, resource_name=resource_name, name=name)
    if value is not None:
        rec.value = value
    return MetadataRecord(config=rec)


def encode_batch(records: Iterable[MetadataRecord]) -> bytes:
    """The bytes of one Raft entry holding these records."""
    return pb.MetadataBatch(records=list(records)).SerializeToString(deterministic=True)


def decode_batch(data: bytes) -> list[MetadataRecord]:
    batch = pb.MetadataBatch()
    try:
        batch.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a metadata batch: {exc}") from None
    return list(batch.records)


def describe(record: MetadataRecord) -> str:
    """One line for logs and error messages."""
    kind = record.WhichOneof("record")
    if kind is None:
        return "empty MetadataRecord"
    body = getattr(record, kind)
    text = " ".join(str(body).split())
    return f"{kind}{{{text}}}"
