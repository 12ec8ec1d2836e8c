"""Incrementally altered configs in the controller (coordinator/metadata/configs.py): topic overrides,
dynamic broker configs, their replay and snapshots, and what the controller does with the new values."""

from __future__ import annotations

from coordinator.metadata import NO_LEADER, MetadataDelta, MetadataImage, TopicIdPartition
from coordinator.metadata import records as rec
from coordinator.metadata.configs import (
    DYNAMIC_BROKER_CONFIGS,
    AlterConfigsResource,
    AlterConfigsResponse,
    ConfigChange,
    ConfigResource,
    ConfigSource,
    dynamic_layers,
    dynamic_topic_defaults,
    resolve,
)
from coordinator.metadata.records import BROKER_RESOURCE, TOPIC_RESOURCE
from coordinator.metadata.topic_config import SUPPORTED_CONFIGS
from ketch.errors import ErrorCode
from tests.test_metadata_support import Cluster, check_invariants, check_snapshot


def topic(name: str, **changes: str | None) -> AlterConfigsResource:
    return AlterConfigsResource(
        ConfigResource(TOPIC_RESOURCE, name), tuple(ConfigChange(k.replace("_", "."), v) for k, v in changes.items())
    )


def brokers(name: str, changes: dict[str, str | None]) -> AlterConfigsResource:
    return AlterConfigsResource(
        ConfigResource(BROKER_RESOURCE, name), tuple(ConfigChange(k, v) for k, v in changes.items())
    )


def alter(c: Cluster, *resources: AlterConfigsResource, validate_only: bool = False) -> list[tuple[ErrorCode, str]]:
    before = c.image
    result = c.ctl.incremental_alter_configs(resources, validate_only)
    assert c.image is before
    if validate_only:
        assert result.records == []
    response: AlterConfigsResponse = c.run(result)
    return [(r.error_code, r.error_message) for r in response.results]


def three(min_isr: int = 1) -> tuple[Cluster, str]:
    c = Cluster(session_timeout_ms=1000, min_isr=min_isr)
    c.add_brokers([1, 2, 3])
    return c, c.create("t", 1, 3, {"retention.ms": "1000"})


def configs_of(c: Cluster, name: str) -> dict[str, str]:
    t = c.image.topic(name)
    assert t is not None
    return dict(t.configs)


# -- topics --


def test_set_and_delete_topic_overrides_normalised() -> None:
    c, _ = three()
    assert alter(c, topic("t", retention_ms="007", cleanup_policy="Delete, COMPACT")) == [(ErrorCode.NONE, "")]
    assert configs_of(c, "t") == {"retention.ms": "7", "cleanup.policy": "compact,delete"}
    assert alter(c, topic("t", retention_ms=None, max_message_bytes=None)) == [(ErrorCode.NONE, "")]
    assert configs_of(c, "t") == {"cleanup.policy": "compact,delete"}  # deleting an absent key is fine
    check_snapshot(c.image)


def test_unchanged_values_and_validate_only_write_nothing() -> None:
    c, _ = three()
    before = c.offset
    assert alter(c, topic("t", retention_ms="1000", flush_messages=None)) == [(ErrorCode.NONE, "")]
    assert c.offset == before  # same value, absent key: no records
    assert alter(c, topic("t", retention_ms="5"), validate_only=True) == [(ErrorCode.NONE, "")]
    assert alter(c, topic("t", retention_ms="soon"), validate_only=True)[0][0] == ErrorCode.INVALID_CONFIG
    assert c.offset == before and configs_of(c, "t") == {"retention.ms": "1000"}


def test_each_resource_gets_its_own_result() -> None:
    c, _ = three()
    c.create("u", 1, 1)
    results = alter(
        c,
        topic("missing", retention_ms="5"),
        topic("t", retention_ms="soon"),
        topic("u", retention_ms="5"),
        AlterConfigsResource(ConfigResource(7, "x"), ()),
    )
    codes = [code for code, _ in results]
    assert codes == [
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_CONFIG,
        ErrorCode.NONE,
        ErrorCode.INVALID_REQUEST,
    ]
    assert "retention.ms" in results[1][1] and "'missing'" in results[0][1]
    assert configs_of(c, "u") == {"retention.ms": "5"} and configs_of(c, "t") == {"retention.ms": "1000"}


def test_unknown_keys_duplicates_and_bad_values_are_refused() -> None:
    c, _ = three()
    ((code, message),) = alter(c, topic("t", retention_hours="5"))
    assert code == ErrorCode.INVALID_CONFIG and "retention.hours" in message and "retention.ms" in message
    assert alter(c, topic("t", retention_hours=None))[0][0] == ErrorCode.INVALID_CONFIG
    twice = AlterConfigsResource(
        ConfigResource(TOPIC_RESOURCE, "t"), (ConfigChange("retention.ms", "1"), ConfigChange("retention.ms", None))
    )
    assert alter(c, twice)[0][0] == ErrorCode.INVALID_REQUEST
    assert [r[0] for r in alter(c, topic("t", retention_ms="1"), topic("t", retention_ms="2"))] == [
        ErrorCode.INVALID_REQUEST
    ] * 2
    for key, bad in [
        ("min.cleanable.dirty.ratio", "1.5"),
        ("cleanup.policy", "forever"),
        ("unclean.leader.election.enable", "maybe"),
        ("min.insync.replicas", "0"),
        ("max.message.bytes", str(1 << 40)),
    ]:
        ((code, message),) = alter(c, topic("t", **{key.replace(".", "_"): bad}))
        assert code == ErrorCode.INVALID_CONFIG and key in message, (key, message)
    assert configs_of(c, "t") == {"retention.ms": "1000"}


def test_overrides_go_with_the_topic() -> None:
    c, _ = three()
    alter(c, topic("t", min_insync_replicas="2"))
    c.run(c.ctl.delete_topic("t"))
    c.create("t", 1, 3)
    assert configs_of(c, "t") == {}


def test_replay_of_a_config_record_for_an_unknown_topic_or_bad_resource_fails() -> None:
    from coordinator.metadata import MetadataReplayError

    for record in (
        rec.config(TOPIC_RESOURCE, "nope", "retention.ms", "1"),
        rec.config(BROKER_RESOURCE, "one", "log.retention.ms", "1"),
        rec.config(9, "", "log.retention.ms", "1"),
        rec.config(BROKER_RESOURCE, "", "", "1"),
    ):
        delta = MetadataDelta(MetadataImage())
        try:
            delta.replay(1, record)
        except MetadataReplayError:
            continue
        raise AssertionError(f"replayed {record}")


# -- brokers --


def test_dynamic_broker_configs_cluster_wide_and_per_broker() -> None:
    c, _ = three()
    ok = (ErrorCode.NONE, "")
    assert alter(c, brokers("", {"log.retention.ms": "60000", "log.cleaner.min.cleanable.ratio": ".25"})) == [ok]
    both = alter(c, brokers("2", {"log.retention.ms": "5000"}), brokers("03", {"message.max.bytes": "2048"}))
    assert both == [ok, ok]
    assert c.image.broker_configs == {
        "": {"log.retention.ms": "60000", "log.cleaner.min.cleanable.ratio": "0.25"},
        "2": {"log.retention.ms": "5000"},
        "3": {"message.max.bytes": "2048"},
    }
    assert dynamic_topic_defaults(c.image, 2) == {"retention.ms": "5000", "min.cleanable.dirty.ratio": "0.25"}
    assert dynamic_topic_defaults(c.image, 1) == {"retention.ms": "60000", "min.cleanable.dirty.ratio": "0.25"}
    check_snapshot(c.image)
    alter(c, brokers("3", {"message.max.bytes": None}))
    assert "3" not in c.image.broker_configs  # a resource with no keys left is gone
    check_snapshot(c.image)


def test_broker_resource_refusals() -> None:
    c, _ = three()
    ((code, message),) = alter(c, brokers("", {"log.segment.bytes": "1"}))
    assert code == ErrorCode.INVALID_CONFIG and all(k in message for k in DYNAMIC_BROKER_CONFIGS)
    ((code, message),) = alter(c, brokers("", {"log.retention.ms": "soon"}))
    assert code == ErrorCode.INVALID_CONFIG and "log.retention.ms" in message
    ((code, message),) = alter(c, brokers("9", {"log.retention.ms": "1"}))
    assert code == ErrorCode.BROKER_ID_NOT_REGISTERED and "9" in message
    assert alter(c, brokers("node-1", {"log.retention.ms": "1"}))[0][0] == ErrorCode.INVALID_REQUEST
    assert c.image.broker_configs == {}


def test_every_topic_config_has_one_dynamic_broker_key() -> None:
    assert sorted(DYNAMIC_BROKER_CONFIGS.values()) == sorted(SUPPORTED_CONFIGS)


def test_layers_resolve_most_specific_first() -> None:
    c, _ = three()
    alter(
        c,
        brokers("", {"log.retention.ms": "60000", "log.retention.bytes": "10"}),
        brokers("1", {"log.retention.ms": "5"}),
    )
    layers = [
        (ConfigSource.DYNAMIC_TOPIC_CONFIG, {"retention.bytes": "20"}),
        *dynamic_layers(c.image, 1),
        (ConfigSource.DEFAULT_CONFIG, {"retention.ms": "1", "retention.bytes": "-1", "flush.messages": "0"}),
    ]
    assert resolve("retention.bytes", layers) == ("20", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert resolve("retention.ms", layers) == ("5", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert resolve("retention.ms", [layers[0], *dynamic_layers(c.image, 2)]) == (
        "60000",
        ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
    )
    assert resolve("flush.messages", layers) == ("0", ConfigSource.DEFAULT_CONFIG)


# -- what the controller does with the values --


def test_a_cluster_wide_min_insync_replicas_is_the_controllers_floor() -> None:
    c, tid = three(min_isr=1)
    alter(c, brokers("", {"min.insync.replicas": "2"}))
    assert c.advance(2000, alive=[2, 3]) == (1,)
    assert c.advance(2000, alive=[3]) == (2,)
    p = c.image.partition(tid, 0)
    assert p is not None and p.leader == 3 and set(p.isr) == {2, 3}  # 2 kept: the floor is 2
    check_invariants(c.image)
    # Lowering it again releases the fenced member the floor kept, in the same batch.
    alter(c, brokers("", {"min.insync.replicas": None}))
    p = c.image.partition(tid, 0)
    assert p is not None and p.isr == (3,) and p.leader == 3
    check_invariants(c.image)


def test_switching_unclean_election_on_ends_a_stuck_recovery() -> None:
    """The issue's case: the last ISR member came back from an unclean shutdown while another replica is
    down, so recovery waits for that one; allowing unclean election for the topic elects in the same batch."""
    c, tid = three(min_isr=1)
    tp = TopicIdPartition(tid, 0)
    assert c.advance(1100, alive=[1, 2]) == (3,)  # 3 is down and leaves the ISR
    c.register(2, clean=False)  # 2 restarts uncleanly: it leaves the ISR too
    c.heartbeat(2)
    c.register(1, clean=False, logs={tp: (1, 20)})  # and so does the last member
    c.heartbeat(1)
    c.advance(10, alive=[1, 2])
    p = c.image.partition(tid, 0)
    assert p is not None and p.recovering and p.leader == NO_LEADER  # waits for 3's report
    check_invariants(c.image)
    assert alter(c, topic("t", unclean_leader_election_enable="TRUE")) == [(ErrorCode.NONE, "")]
    assert [r.WhichOneof("record") for r in c.batches[-1][1]] == ["config", "partition_change"]
    p = c.image.partition(tid, 0)
    assert p is not None and not p.recovering and p.leader == 1 and p.isr == (1,)
    check_invariants(c.image)
    check_snapshot(c.image)


def test_a_cluster_wide_unclean_default_reaches_topics_without_an_override() -> None:
    c = Cluster(session_timeout_ms=1000)
    c.add_brokers([1, 2])
    a = c.create("a", 1, 2)
    b = c.create("b", 1, 2, {"unclean.leader.election.enable": "false"})
    c.register(2, clean=False)  # 2 leaves both ISRs; then 1, their last member, goes silent
    c.heartbeat(2)
    assert c.advance(1100, alive=[2]) == (1,)
    offline = [t for t in (a, b) if (p := c.image.partition(t, 0)) is not None and p.leader == NO_LEADER]
    assert offline == [a, b]  # 2 is alive but was not in sync
    alter(c, brokers("", {"unclean.leader.election.enable": "true"}))
    pa, pb = c.image.partition(a, 0), c.image.partition(b, 0)
    assert pa is not None and pa.leader == 2 and pa.isr == (2,)
    assert pb is not None and pb.leader == NO_LEADER  # the topic's own "false" wins
    check_invariants(c.image)
    # Switching it off again elects nobody and writes no partition change.
    alter(c, brokers("", {"unclean.leader.election.enable": None}))
    assert [r.WhichOneof("record") for r in c.batches[-1][1]] == ["config"]


def test_per_broker_values_do_not_move_the_controller() -> None:
    c, tid = three()
    before = c.offset
    alter(c, brokers("1", {"unclean.leader.election.enable": "true", "min.insync.replicas": "3"}))
    assert c.offset == before + 1 and [r.WhichOneof("record") for r in c.batches[-1][1]] == ["config", "config"]
    assert not c.image.unclean_leader_election(c.image.topics[tid]) and c.image.min_isr_default(1) == 1


def test_the_service_refuses_an_unknown_operation() -> None:
    import pytest

    from coordinator.service import _alter_resources
    from ketch.api.v1 import ketch_pb2 as pb
    from ketch.errors import KetchError

    request = pb.IncrementalAlterConfigsRequest()
    item = request.resources.add(resource=pb.ConfigResource(type=pb.CONFIG_RESOURCE_TOPIC, name="t"))
    item.configs.add(name="retention.ms", op=pb.ALTER_CONFIG_SET, value="5")
    item.configs.add(name="flush.messages", op=pb.ALTER_CONFIG_DELETE, value="ignored")
    (resource,) = _alter_resources(request)
    assert resource == topic("t", retention_ms="5", flush_messages=None)
    item.configs.add(name="x", op=7)
    with pytest.raises(KetchError) as err:
        _alter_resources(request)
    assert err.value.code == ErrorCode.INVALID_REQUEST
