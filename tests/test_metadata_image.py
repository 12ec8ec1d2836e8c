"""Replay rules, images, deltas, local changes and snapshots of the metadata state machine."""

from __future__ import annotations

import pytest

from coordinator.metadata import (
    MetadataDelta,
    MetadataImage,
    MetadataReplayError,
    TopicIdPartition,
    decode_batch,
    decode_snapshot,
    encode_batch,
    encode_snapshot,
    local_changes,
    replay_batch,
)
from coordinator.metadata import records as rec
from tests.test_metadata_support import Cluster, check_snapshot


def base_image() -> MetadataImage:
    return replay_batch(
        MetadataImage(),
        5,
        [
            rec.register_broker(1, "i1", "h1", 1),
            rec.register_broker(2, "i2", "h2", 2, rack="r2"),
            rec.register_broker(3, "i3", "h3", 3),
            rec.topic("orders", "T", {"retention.ms": "1000"}),
            rec.partition("T", 0, [1, 2, 3], [1, 2, 3], 1),
            rec.partition("T", 1, [2, 3, 1], [2, 3, 1], 2),
        ],
    )


def test_registration_epoch_is_the_record_offset_and_starts_fenced() -> None:
    image = base_image()
    b = image.brokers[2]
    assert (b.epoch, b.fenced, b.rack, b.host, b.port) == (5, True, "r2", "h2", 2)
    assert image.offset == 5
    assert image.fenced_broker_count == 3
    again = replay_batch(image, 9, [rec.register_broker(2, "i2b", "h2", 2)])
    assert again.brokers[2].epoch == 9 and again.brokers[2].incarnation_id == "i2b"
    assert image.brokers[2].epoch == 5  # the old image is untouched


def test_fence_records_name_the_current_epoch() -> None:
    image = replay_batch(base_image(), 6, [rec.broker_fence(1, 5, fenced=False)])
    assert image.is_usable(1) and image.usable_broker_ids == (1,)
    with pytest.raises(MetadataReplayError, match="epoch"):
        replay_batch(image, 7, [rec.broker_fence(1, 4, fenced=True)])
    with pytest.raises(MetadataReplayError, match="unregistered"):
        replay_batch(image, 7, [rec.broker_fence(9, 5, fenced=True)])
    down = replay_batch(image, 7, [rec.broker_fence(1, 5, fenced=True, shut_down=True)])
    assert down.brokers[1].shut_down and down.brokers[1].fenced
    with pytest.raises(MetadataReplayError, match="shut down"):
        replay_batch(down, 8, [rec.broker_fence(1, 5, fenced=False)])


def test_partition_change_bumps_epochs() -> None:
    image = base_image()
    isr_only = replay_batch(image, 6, [rec.partition_change("T", 0, isr=[1, 2])])
    p = isr_only.partition("T", 0)
    assert p is not None and (p.leader, p.isr, p.leader_epoch, p.partition_epoch) == (1, (1, 2), 0, 1)
    moved = replay_batch(isr_only, 7, [rec.partition_change("T", 0, leader=2, isr=[2])])
    p = moved.partition("T", 0)
    assert p is not None and (p.leader, p.isr, p.leader_epoch, p.partition_epoch) == (2, (2,), 1, 2)
    offline = replay_batch(moved, 8, [rec.partition_change("T", 0, leader=-1)])
    p = offline.partition("T", 0)
    assert p is not None and p.offline and (p.leader_epoch, p.partition_epoch) == (2, 3)
    assert offline.offline_partition_count == 1 and offline.under_replicated_partition_count == 1
    assert offline.leaders_per_broker == {1: 0, 2: 1, 3: 0}
    # the untouched partition and the old image are shared, not copied
    assert offline.topics["T"].partitions[1] is image.topics["T"].partitions[1]


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (rec.partition_change("T", 0, leader=4), "not in the ISR"),
        (rec.partition_change("T", 0, isr=[1, 4]), "not a subset"),
        (rec.partition_change("T", 0, isr=[]), "non-empty"),
        (rec.partition_change("T", 7, isr=[1]), "unknown partition"),
        (rec.partition_change("X", 0, isr=[1]), "unknown partition"),
        (rec.partition("T", 1, [1], [1], 1), "exists"),
        (rec.partition("X", 0, [1], [1], 1), "unknown topic"),
        (rec.partition("T", 2, [1, 1], [1], 1), "distinct"),
        (rec.topic("orders", "T2", {}), "already exists"),
        (rec.topic("other", "T", {}), "already exists"),
        (rec.remove_topic("X"), "unknown topic"),
        (rec.MetadataRecord(), "unknown record"),
    ],
)
def test_records_that_do_not_fit_raise(record: rec.MetadataRecord, match: str) -> None:
    with pytest.raises(MetadataReplayError, match=match):
        replay_batch(base_image(), 6, [record])


def test_offsets_never_go_back() -> None:
    delta = MetadataDelta(base_image())
    delta.replay(6, rec.no_op(1))
    delta.replay(6, rec.no_op(1))  # records of one batch share its offset
    with pytest.raises(MetadataReplayError, match="behind"):
        delta.replay(5, rec.no_op(1))
    assert delta.apply().offset == 6
    delta.replay_batch(9, [])  # a Raft no-op entry: no records, the offset still moves
    assert delta.apply().offset == 9
    with pytest.raises(MetadataReplayError, match="behind"):
        delta.replay_batch(8, [])


def test_remove_and_recreate_topic_in_one_delta() -> None:
    image = base_image()
    delta = MetadataDelta(image)
    delta.replay_batch(6, [rec.remove_topic("T"), rec.topic("orders", "U", {}), rec.partition("U", 0, [3], [3], 3)])
    new = delta.apply()
    assert set(new.topics) == {"U"} and new.topic("orders") is new.topics["U"]
    assert delta.removed_topic_ids == {"T"} and delta.changed_topic_ids == {"T", "U"}
    changes = delta.local_changes(3)
    assert set(changes.deletes) == {TopicIdPartition("T", 0), TopicIdPartition("T", 1)}
    assert set(changes.leaders) == {TopicIdPartition("U", 0)}
    assert changes.deletes[TopicIdPartition("T", 1)].topic_name == "orders"
    only_deletes = delta.local_changes(1)
    assert set(only_deletes.deletes) == {TopicIdPartition("T", 0), TopicIdPartition("T", 1)}
    assert not only_deletes.leaders and not only_deletes.followers
    assert not delta.local_changes(9)


def test_local_changes_report_only_this_brokers_changed_replicas() -> None:
    image = replay_batch(base_image(), 6, [rec.topic("other", "O", {}), rec.partition("O", 0, [3], [3], 3)])
    delta = MetadataDelta(image)
    delta.replay_batch(
        7, [rec.partition_change("T", 0, leader=2, isr=[2, 3]), rec.partition_change("T", 1, isr=[2, 1])]
    )
    c2 = delta.local_changes(2)
    assert set(c2.leaders) == {TopicIdPartition("T", 0), TopicIdPartition("T", 1)}  # new leadership, new ISR
    assert c2.leaders[TopicIdPartition("T", 0)].state.leader_epoch == 1
    c1 = delta.local_changes(1)
    assert set(c1.followers) == {TopicIdPartition("T", 0), TopicIdPartition("T", 1)}
    assert c1.followers[TopicIdPartition("T", 0)].state.leader == 2
    c3 = delta.local_changes(3)
    assert set(c3.followers) == {TopicIdPartition("T", 0), TopicIdPartition("T", 1)}  # "O" did not change
    # start-up: diff against the empty image gives everything the broker holds
    boot = local_changes(MetadataImage(), delta.apply(), 3)
    assert set(boot.leaders) == {TopicIdPartition("O", 0)}
    assert set(boot.followers) == {TopicIdPartition("T", 0), TopicIdPartition("T", 1)}


def test_delta_apply_is_cached_until_next_replay() -> None:
    delta = MetadataDelta(base_image())
    assert delta.apply() == base_image()
    first = delta.apply()
    assert delta.apply() is first
    delta.replay(6, rec.broker_fence(3, 5, fenced=False))
    assert delta.apply() is not first and delta.apply().is_usable(3)
    assert delta.changed_broker_ids == {3}


def test_batch_codec_round_trips_and_refuses_garbage() -> None:
    records = [rec.register_broker(1, "i", "h", 1), rec.partition_change("T", 0, leader=-1, isr=[])]
    data = encode_batch(records)
    assert decode_batch(data) == records
    assert decode_batch(data)[1].partition_change.HasField("isr")  # an empty ISR list is still "present"
    with pytest.raises(ValueError, match="not a metadata batch"):
        decode_batch(b"\xff\xff\xff")


def test_snapshot_round_trip_keeps_epochs_fencing_and_configs() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3], racks={1: "a", 2: "b"})
    c.create("orders", 4, 3, {"retention.ms": "60000", "unclean.leader.election.enable": "true"})
    c.create("audit", 1, 1)
    c.run(c.ctl.shutdown_broker(2, c.epoch(2)))
    c.advance(20_000, alive=[1])  # 3 is fenced by session expiry
    check_snapshot(c.image)
    image = decode_snapshot(encode_snapshot(c.image))
    assert image.offset == c.image.offset
    assert image.brokers[2].shut_down and image.brokers[3].fenced and not image.brokers[3].shut_down
    assert image.brokers[1].epoch == c.image.brokers[1].epoch != image.offset
    orders = image.topic("orders")
    assert orders is not None and image.unclean_leader_election(orders)
    check_snapshot(MetadataImage())
    check_snapshot(MetadataImage(offset=42))
    with pytest.raises(ValueError, match="not a metadata snapshot"):
        decode_snapshot(b"\x08")
