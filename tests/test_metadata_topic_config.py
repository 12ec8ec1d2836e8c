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
        ({"cleanup.policy": "compaction"}, "accepted: delete, compact, or both (compact,delete)"),
        ({"delete.retention.ms": "-1"}, "delete.retention.ms=-1 must be >= 0"),
        ({"min.compaction.lag.ms": "-1"}, "min.compaction.lag.ms=-1 must be >= 0"),
        ({"min.compaction.lag.ms": "1.5"}, "min.compaction.lag.ms='1.5' is not an integer"),
    ]:
        with pytest.raises(KetchError) as err:
            validate_topic_configs(bad, 1 << 20)
        assert err.value.code == ErrorCode.INVALID_CONFIG
        assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("delete", "delete"),
        ("compact", "compact"),
        ("compact,delete", "compact,delete"),
        ("delete,compact", "compact,delete"),
        (" Delete , COMPACT ", "compact,delete"),
        ("compact,compact", "compact"),
    ],
)
def test_cleanup_policy_is_delete_compact_or_both_stored_normalised(given: str, stored: str) -> None:
    assert validate_topic_configs({"cleanup.policy": given}, 1 << 20) == {"cleanup.policy": stored}


@pytest.mark.parametrize("given", ["", "compact,", "none", "compact delete", "compact;delete", "delete,forever"])
def test_any_other_cleanup_policy_is_invalid_config_naming_what_is_accepted(given: str) -> None:
    with pytest.raises(KetchError) as err:
        validate_topic_configs({"cleanup.policy": given}, 1 << 20)
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert f"cleanup.policy={given!r}" in str(err.value)
    assert "accepted: delete, compact, or both (compact,delete)" in str(err.value)
    assert "not built" not in str(err.value)


def test_compaction_configs_are_kafka_keys_stored_normalised() -> None:
    assert validate_topic_configs(
        {"delete.retention.ms": "0", "min.compaction.lag.ms": "007", "min.cleanable.dirty.ratio": ".010"}, 1 << 20
    ) == {"delete.retention.ms": "0", "min.compaction.lag.ms": "7", "min.cleanable.dirty.ratio": "0.01"}
    for given, stored in [("0", "0.0"), ("1", "1.0"), ("0.5", "0.5"), (" 1e-2 ", "0.01")]:
        assert validate_topic_configs({"min.cleanable.dirty.ratio": given}, 1 << 20) == {
            "min.cleanable.dirty.ratio": stored
        }


@pytest.mark.parametrize("given", ["", "half", "-0.1", "1.01", "nan", "inf", "-inf", "0x1"])
def test_min_cleanable_dirty_ratio_outside_0_to_1_is_invalid_config_naming_the_key(given: str) -> None:
    with pytest.raises(KetchError) as err:
        validate_topic_configs({"min.cleanable.dirty.ratio": given}, 1 << 20)
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert f"min.cleanable.dirty.ratio={given!r} must be a number from 0 to 1" in str(err.value)


def test_unknown_key_lists_every_supported_key() -> None:
    with pytest.raises(KetchError) as err:
        validate_topic_configs({"segment.ms": "1"}, 1 << 20)
    for key in ("cleanup.policy", "delete.retention.ms", "min.compaction.lag.ms", "min.cleanable.dirty.ratio"):
        assert key in str(err.value)
