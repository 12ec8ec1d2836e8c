"""Producer id blocks on the controller: allocation, refusals, replay, snapshots, a standby taking over."""

from __future__ import annotations

import pytest

from coordinator.metadata import Controller, MetadataDelta, MetadataReplayError
from coordinator.metadata import records as rec
from coordinator.metadata.producer_ids import PRODUCER_ID_BLOCK_SIZE
from coordinator.metadata.snapshot import decode_snapshot, encode_snapshot
from ketch.errors import ErrorCode, KetchError
from tests.test_metadata_support import Cluster, check_snapshot


def test_blocks_are_consecutive_and_never_overlap() -> None:
    c = Cluster()
    c.add_brokers([1, 2])
    firsts = []
    for broker in (1, 2, 1):
        result = c.ctl.allocate_producer_ids(broker, c.epoch(broker))
        assert [r.WhichOneof("record") for r in result.records] == ["producer_ids"]
        assert c.image.next_producer_id == result.response.first  # the command did not change the image
        block = c.run(result)
        assert block.broker_id == broker and block.size == PRODUCER_ID_BLOCK_SIZE
        firsts.append(block.first)
    assert firsts == [0, PRODUCER_ID_BLOCK_SIZE, 2 * PRODUCER_ID_BLOCK_SIZE]
    assert c.image.next_producer_id == 3 * PRODUCER_ID_BLOCK_SIZE


def test_refused_like_other_broker_commands() -> None:
    c = Cluster()
    c.add_brokers([1])
    before = c.image
    with pytest.raises(KetchError) as err:
        c.ctl.allocate_producer_ids(9, 1)
    assert err.value.code == ErrorCode.BROKER_ID_NOT_REGISTERED
    with pytest.raises(KetchError) as err:
        c.ctl.allocate_producer_ids(1, c.epoch(1) - 1)
    assert err.value.code == ErrorCode.STALE_BROKER_EPOCH
    assert c.image is before


def test_snapshot_carries_next_producer_id() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    c.create("t", 2, 3)
    c.run(c.ctl.allocate_producer_ids(2, c.epoch(2)))
    c.run(c.ctl.allocate_producer_ids(3, c.epoch(3)))
    check_snapshot(c.image)
    restored = decode_snapshot(encode_snapshot(c.image))
    assert restored.next_producer_id == 2 * PRODUCER_ID_BLOCK_SIZE
    # A controller restored from the snapshot continues after the last block.
    ctl = Controller(image=restored)
    assert ctl.allocate_producer_ids(1, c.epoch(1)).response.first == 2 * PRODUCER_ID_BLOCK_SIZE


def test_standby_replays_blocks_and_continues_after_them() -> None:
    c = Cluster()
    c.add_brokers([1, 2])
    c.run(c.ctl.allocate_producer_ids(1, c.epoch(1)))
    standby = Controller()
    for offset, records in c.batches:
        standby.replay_batch(offset, records)
    assert standby.image == c.image
    # The active controller proposes a block that is lost in failover: the standby hands it out again,
    # which is safe because the broker was never answered for it.
    lost = c.ctl.allocate_producer_ids(2, c.epoch(2))
    c.ctl.replay_batch(c.offset + 1, lost.records, committed=False)
    standby.activate()
    again = standby.allocate_producer_ids(2, c.epoch(2)).response
    assert again.first == lost.response.first == PRODUCER_ID_BLOCK_SIZE


def test_replay_refuses_a_block_that_does_not_move_forward() -> None:
    delta = MetadataDelta(Cluster().image)
    delta.replay(1, rec.producer_ids(1, 1, 1000))
    with pytest.raises(MetadataReplayError):
        delta.replay(2, rec.producer_ids(1, 1, 1000))
    assert delta.apply().next_producer_id == 1000
