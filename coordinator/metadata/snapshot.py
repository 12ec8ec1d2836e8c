"""Snapshots of the metadata image, for Raft log compaction and snapshot install.

A snapshot is the image written as records: replaying them into an empty
image at the snapshot's offset gives back an equal image. The Raft layer
stores and ships ``encode_snapshot(image)`` bytes and truncates the log up to
``image.offset``; a node that installs a snapshot calls
``decode_snapshot`` and adopts the image (``Controller.reset`` on
controllers; a broker diffs its old image against it with
``local_changes``).

Rules:
- Records, in this order: each broker (id order) as a RegisterBrokerRecord
  carrying its endpoints (none for a registration from before listeners)
  and its ``broker_epoch`` explicitly (a log record's epoch is its own
  offset, which a snapshot does not preserve), followed by a
  BrokerFenceRecord when it is unfenced or shut down; then each topic (name
  order) as a TopicRecord followed by one PartitionRecord per partition
  with its full state (epochs and an ongoing reassignment included); then, when any producer id was
  handed out, one ProducerIdsRecord with ``next_producer_id`` (its broker
  fields are 0: only the high-water mark matters); then one ConfigRecord per
  dynamic broker config key (resource name order, then key order); then one
  AccessControlEntryRecord per ACL (id order); then one UserScramCredentialRecord per
  credential (user, then mechanism order). A topic's overrides travel in its TopicRecord.
- The bytes are a protobuf ``MetadataSnapshot`` serialised
  deterministically: equal images give equal bytes. No pickle: decoding
  parses data, never runs code.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from coordinator.metadata import records as rec
from coordinator.metadata.delta import MetadataDelta
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.records import MetadataRecord
from ketch.api.v1 import metadata_pb2 as pb


def image_to_records(image: MetadataImage) -> list[MetadataRecord]:
    out: list[MetadataRecord] = []
    for broker_id in sorted(image.brokers):
        b = image.brokers[broker_id]
        out.append(
            rec.register_broker(
                b.broker_id, b.incarnation_id, b.host, b.port, b.rack, broker_epoch=b.epoch, endpoints=b.endpoints
            )
        )
        if not b.fenced or b.shut_down:
            out.append(rec.broker_fence(b.broker_id, b.epoch, fenced=b.fenced, shut_down=b.shut_down))
    for name in sorted(image.topics_by_name):
        t = image.topics_by_name[name]
        out.append(rec.topic(t.name, t.topic_id, t.configs))
        for index in sorted(t.partitions):
            p = t.partitions[index]
            out.append(
                rec.partition(
                    t.topic_id,
                    index,
                    p.replicas,
                    p.isr,
                    p.leader,
                    p.leader_epoch,
                    p.partition_epoch,
                    p.recovering,
                    adding=p.adding,
                    removing=p.removing,
                )
            )
    if image.next_producer_id > 0:
        out.append(rec.producer_ids(0, 0, image.next_producer_id))
    for name in sorted(image.broker_configs):
        keys = image.broker_configs[name]
        out += [rec.config(rec.BROKER_RESOURCE, name, key, keys[key]) for key in sorted(keys)]
    out += [image.acls[acl_id].record(acl_id) for acl_id in sorted(image.acls)]
    out += [image.scram_credentials[key].record() for key in sorted(image.scram_credentials)]
    return out


def image_from_records(offset: int, records: list[MetadataRecord]) -> MetadataImage:
    """Replay snapshot records into an empty image at ``offset``."""
    delta = MetadataDelta(MetadataImage())
    delta.replay_batch(offset, records)
    return delta.apply()


def encode_snapshot(image: MetadataImage) -> bytes:
    snap = pb.MetadataSnapshot(offset=image.offset, records=image_to_records(image))
    return snap.SerializeToString(deterministic=True)


def decode_snapshot(data: bytes) -> MetadataImage:
    snap = pb.MetadataSnapshot()
    try:
        snap.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a metadata snapshot: {exc}") from None
    return image_from_records(snap.offset, list(snap.records))
