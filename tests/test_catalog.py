"""Topic names, topic configs and the catalogue's persistence rules."""

from __future__ import annotations

import pytest

from ketch.errors import ErrorCode, KetchError
from node.catalog import effective_config, validate_configs, validate_topic_name
from node.config import NodeConfig


@pytest.mark.parametrize("name", ["a", "orders.v1", "A_b-c.9", "x" * 249, "..."])
def test_legal_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "has space", "slash/no", "ünï", "a:b"])
def test_illegal_topic_names_are_invalid_topic(name: str) -> None:
    with pytest.raises(KetchError) as err:
        validate_topic_name(name)
    assert err.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_configs_are_checked_by_key_type_and_range() -> None:
    assert validate_configs({"retention.ms": "1000", "max.message.bytes": "2048"}, 1 << 20) == {
        "retention.ms": "1000",
        "max.message.bytes": "2048",
    }
    for bad, fragment in [
        ({"retention.msx": "1"}, "unknown topic config"),
        ({"retention.ms": "soon"}, "not an integer"),
        ({"retention.ms": "-5"}, "must be >= -1"),
        ({"max.message.bytes": str(1 << 30)}, "max_request_bytes"),
        ({"cleanup.policy": "compact"}, "only 'delete'"),
    ]:
        with pytest.raises(KetchError) as err:
            validate_configs(bad, 1 << 20)
        assert err.value.code == ErrorCode.INVALID_CONFIG
        assert fragment in str(err.value)


def test_effective_config_merges_overrides_over_broker_defaults() -> None:
    defaults = NodeConfig(retention_ms=1000, max_message_bytes=2048)
    plain = effective_config({}, defaults)
    assert (plain.retention_ms, plain.max_message_bytes, plain.unclean_leader_election) == (1000, 2048, False)
    tuned = effective_config(
        {"retention.ms": "5", "unclean.leader.election.enable": "true", "min.insync.replicas": "2"}, defaults
    )
    assert (tuned.retention_ms, tuned.min_insync_replicas, tuned.unclean_leader_election) == (5, 2, True)
    assert tuned.as_kafka()["unclean.leader.election.enable"] == "true"
    assert tuned.as_kafka()["max.message.bytes"] == "2048"
