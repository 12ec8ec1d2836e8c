"""The pure rules behind fast failover: probing silent brokers (sessions.py, brokers.py
``fence_unreachable``), the metadata follower's stall watch, and the client's metadata merge and
candidate order (ketch/aio/connection.py)."""

from __future__ import annotations

from coordinator.metadata import Controller, ControllerConfig
from ketch.aio.connection import Broker, Cluster, Connection, PartitionInfo, TopicInfo, never_older
from node.metadata_follower import StallWatch
from tests.test_metadata_support import Cluster as MetadataCluster


def probing(session_ms: int = 2500, probe_ms: int = 750) -> tuple[MetadataCluster, str]:
    c = MetadataCluster()
    c.ctl = Controller(ControllerConfig(broker_session_timeout_ms=session_ms, broker_liveness_probe_ms=probe_ms))
    c.add_brokers([1, 2, 3])
    return c, c.create("t", 1, 3, start=0)


def leader(c: MetadataCluster, topic_id: str) -> int:
    return c.image.partition(topic_id, 0).leader  # type: ignore[union-attr]


def test_only_silent_unfenced_brokers_are_worth_a_probe() -> None:
    c, _ = probing()
    assert c.ctl.silent_brokers(c.now) == []  # the first call starts the clocks
    c.now += 700
    c.heartbeat_all(except_=[2])
    assert c.ctl.silent_brokers(c.now) == []  # 700 ms: not silent yet
    c.now += 100
    silent = c.ctl.silent_brokers(c.now)
    assert [(b, host, port) for b, _, host, port in silent] == [(2, "h", 9002)]
    assert silent[0][1] == c.epoch(2)


def test_probing_off_never_names_anyone() -> None:
    c, _ = probing(probe_ms=0)
    c.now += 60_000
    assert c.ctl.silent_brokers(c.now) == []


def test_a_refused_silent_broker_is_fenced_before_its_session_and_loses_its_leaderships() -> None:
    c, topic_id = probing()
    assert leader(c, topic_id) == 1
    c.ctl.silent_brokers(c.now)
    c.now += 800
    c.heartbeat_all(except_=[1])
    fenced = c.run(c.ctl.fence_unreachable(1, c.epoch(1), c.now)).fenced
    assert fenced == (1,)
    assert not c.image.is_usable(1)
    assert leader(c, topic_id) in (2, 3)
    assert c.image.partition(topic_id, 0).leader_epoch == 1  # type: ignore[union-attr]


def test_a_heartbeat_during_the_probe_or_a_new_registration_wins() -> None:
    c, topic_id = probing()
    c.ctl.silent_brokers(c.now)
    c.now += 800
    epoch = c.epoch(1)
    c.heartbeat(1)  # arrived while the driver was probing: the broker is alive after all
    assert c.ctl.fence_unreachable(1, epoch, c.now).records == []
    c.now += 800
    c.register(1)  # a restarted process: the probed epoch is gone
    assert c.ctl.fence_unreachable(1, epoch, c.now).records == []
    assert c.ctl.fence_unreachable(9, 1, c.now).records == []  # unknown broker
    assert leader(c, topic_id) != -1


def test_the_stall_watch_fires_only_when_the_image_stays_behind() -> None:
    w = StallWatch(1000)
    w.report(10, 10, 0)
    assert not w.stalled(10, 5000)  # caught up when told
    w.report(12, 10, 0)
    w.report(20, 10, 500)  # the clock runs from the first report behind
    assert not w.stalled(11, 1000)
    assert w.stalled(11, 1001)
    assert not w.stalled(12, 1002)  # reached it: cleared
    w.report(15, 12, 2000)
    w.reset()
    assert not w.stalled(12, 9000)


def info(epoch: int, leader: int, topic_id: str = "a") -> TopicInfo:
    return TopicInfo.make("t", 0, "", topic_id, {0: PartitionInfo(0, leader, epoch, (1, 2, 3), (1, 2, 3))})


def test_a_refresh_never_moves_a_partition_to_an_older_leader_epoch() -> None:
    stale, known = info(3, 1), info(4, 2)
    assert never_older(stale, known).partitions[0].leader == 2  # a cut-off broker's old image
    assert never_older(info(5, 3), known).partitions[0].leader == 3
    assert never_older(stale, None).partitions[0].leader == 1
    assert never_older(info(0, 1, "b"), known).partitions[0].leader == 1  # a re-created topic starts over


def test_failed_and_avoided_nodes_are_asked_last() -> None:
    conn = Connection("h:1,h:2,h:3")
    conn.cluster = Cluster(brokers={n: Broker(n, "h", n) for n in (1, 2, 3)})
    assert conn.candidates() == [("h", 1), ("h", 2), ("h", 3)]
    conn._failed_at[("h", 1)] = 1e18  # failed just now
    assert conn.candidates() == [("h", 2), ("h", 3), ("h", 1)]
    assert conn.candidates(avoid=[("h", 2)]) == [("h", 3), ("h", 1), ("h", 2)]


def test_a_new_controller_fences_a_broker_not_heard_from_within_the_first_contact() -> None:
    c = MetadataCluster()
    c.ctl = Controller(ControllerConfig(broker_session_timeout_ms=2500, broker_first_contact_ms=1500))
    c.add_brokers([1, 2, 3])
    c.ctl.activate()  # a failover: every clock starts afresh, at the first tick
    assert c.advance(0) == ()  # never fences at once
    assert c.advance(1400, alive=[2, 3]) == ()
    assert c.advance(200, alive=[2, 3]) == (1,)  # 1.6 s without a word: fenced, not 2.5 s
    assert c.advance(2400, alive=[3]) == ()  # once heard from, the whole session again
    assert c.advance(200, alive=[3]) == (2,)


def test_a_reported_broker_is_fenced_on_a_refused_probe_unless_heard_from_since_the_probe_began() -> None:
    """A heartbeat named broker 1 unreachable (a follower's fetch failed): it is worth a probe at once,
    not after ``broker_liveness_probe_ms`` of silence, and a refused probe fences it if nothing came
    from it since the probe began (``silent_ms`` = the probe's age), however recent its last heartbeat."""
    c, topic_id = probing()
    c.ctl.silent_brokers(c.now)
    c.heartbeat_all()
    assert [(b, e) for b, e, _, _ in c.ctl.probe_targets([1, 9, 1])] == [(1, c.epoch(1))]  # 9: unknown
    c.heartbeat(1)  # 1 ms before the probe began: recent, but it does not save broker 1
    c.now += 1
    began = c.now
    c.now += 3
    fenced = c.run(c.ctl.fence_unreachable(1, c.epoch(1), c.now, silent_ms=c.now - began)).fenced
    assert fenced == (1,) and leader(c, topic_id) in (2, 3)
    assert c.ctl.probe_targets([1]) == []  # fenced: nothing left to probe

    began = c.now
    c.now += 2
    c.heartbeat(2)  # heard from during the probe: alive after all
    c.now += 2
    assert c.ctl.fence_unreachable(2, c.epoch(2), c.now, silent_ms=c.now - began).records == []
    assert probing(probe_ms=0)[0].ctl.probe_targets([1]) == []  # probing off
