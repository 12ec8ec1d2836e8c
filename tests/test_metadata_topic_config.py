"""Topic names and topic configs: the rules the controller enforces (coordinator/metadata/topic_config.py)."""

from __future__ import annotations

import pytest

from coordinator.metadata.topic_config import validate_topic_configs, validate_topic_name
from ketch.errors import ErrorCode, KetchError


@pytest.mark.parametrize("name", ["a", "orders.v1", "A_b-c.9", "x" * 249, "..."])
def test_legal_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "has space", "slash/no", "ünï", "a:b"])
def test_illegal_topic_names_are_invalid_topic(name: str) -> None:
    with pytest.raises(KetchError) as err:
        validate_topic_name(name)
    assert err.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_configs_are_checked_by_key_type_and_range() -> None:
    assert validate_topic_configs({"retention.ms": "1000", "max.message.bytes": "2048"}, 1 << 20) == {
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
            validate_topic_configs(bad, 1 << 20)
        assert err.value.code == ErrorCode.INVALID_CONFIG
        assert fragment in str(err.value)
