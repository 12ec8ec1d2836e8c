"""Topic names, topic configs and the catalogue's persistence rules."""

from __future__ import annotations

import pytest

from ketch.errors import ErrorCode, KetchError
from node.catalog import TopicCatalog, validate_configs, validate_topic_name
from node.config import NodeConfig


class DictMeta:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def meta_get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def meta_put(self, key: bytes, value: bytes, sync: bool = True) -> None:
        self.data[key] = value

    def meta_delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))


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


def test_catalogue_persists_and_never_reuses_partition_ids() -> None:
    meta = DictMeta()
    ids = iter(["id-a", "id-b", "id-c"])
    catalog = TopicCatalog(meta, NodeConfig())
    a = catalog.create("a", 3, 1, {"retention.ms": "5"}, lambda: next(ids))
    catalog.create("b", 2, 1, {}, lambda: next(ids))
    catalog.delete("a")
    c = catalog.create("a", 1, 1, {}, lambda: next(ids))
    assert a.partition_ids == (0, 1, 2)
    assert c.partition_ids == (5,)
    reopened = TopicCatalog(meta, NodeConfig())
    assert reopened.names() == ["a", "b"]
    assert reopened.get("a").topic_id == "id-c"
    assert reopened.effective(reopened.get("b")).retention_ms == NodeConfig().retention_ms
    assert catalog.effective(a).retention_ms == 5


def test_create_refuses_duplicates_bad_counts_and_replication_beyond_brokers() -> None:
    catalog = TopicCatalog(DictMeta(), NodeConfig())
    catalog.create("t", 1, 1, {}, lambda: "x")
    cases = [
        (("t", 1, 1), ErrorCode.TOPIC_ALREADY_EXISTS),
        (("u", 0, 1), ErrorCode.INVALID_PARTITIONS),
        (("u", 1, 3), ErrorCode.INVALID_REPLICATION_FACTOR),
        (("bad name", 1, 1), ErrorCode.INVALID_TOPIC_EXCEPTION),
    ]
    for (name, partitions, rf), code in cases:
        with pytest.raises(KetchError) as err:
            catalog.create(name, partitions, rf, {}, lambda: "y")
        assert err.value.code == code
    assert catalog.names() == ["t"]
