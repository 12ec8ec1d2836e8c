"""The ``__transaction_state`` record: round trips, canonical bytes, and ValueError on anything malformed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.transactions import MAX_EPOCH, TV1, TV2, TransactionMetadata, TxnState, decode_record, encode_record
from coordinator.transactions.state import ENDING
from ketch.topic_partition import TopicPartition

META = TransactionMetadata(
    "tx-1",
    producer_id=4000,
    producer_epoch=7,
    timeout_ms=60_000,
    state=TxnState.PREPARE_COMMIT,
    partitions=frozenset({TopicPartition("b", 1), TopicPartition("a", 0), TopicPartition("__consumer_offsets", 3)}),
    group_ids=frozenset({"g2", "g1"}),
    start_time_ms=1_000,
    last_update_ms=2_000,
    ended_by="client",
)

metadata = st.builds(
    TransactionMetadata,
    transactional_id=st.text(max_size=8),
    producer_id=st.integers(0, 2**63 - 1),
    producer_epoch=st.integers(0, MAX_EPOCH),
    timeout_ms=st.integers(1, 900_000),
    state=st.sampled_from(TxnState),
    partitions=st.frozensets(st.builds(TopicPartition, st.text(max_size=4), st.integers(0, 100)), max_size=4),
    group_ids=st.frozensets(st.text(max_size=4), max_size=3),
    start_time_ms=st.integers(-1, 2**50),
    last_update_ms=st.integers(-1, 2**50),
    ended_by=st.sampled_from(["", "client", "timeout", "fence"]),
).filter(lambda meta: (meta.ended_by != "") == (meta.state in ENDING))


@settings(max_examples=200, deadline=None)
@given(metadata)
def test_every_metadata_round_trips(meta: TransactionMetadata) -> None:
    key, value = encode_record(meta)
    assert decode_record(key, value) == meta
    assert encode_record(decode_record(key, value)) == (key, value)


def test_the_bytes_are_canonical_and_the_key_is_the_id_alone() -> None:
    key, value = encode_record(META)
    assert key == b'{"transactional_id":"tx-1","v":0}'
    obj = json.loads(value)
    assert obj["partitions"] == [["__consumer_offsets", 3], ["a", 0], ["b", 1]]
    assert obj["group_ids"] == ["g1", "g2"]
    assert obj["state"] == "PrepareCommit"
    later = TransactionMetadata("tx-1", 4000, 8, 60_000, TxnState.EMPTY)
    assert encode_record(later)[0] == key  # one key per id: the latest record wins


def _value(**changes: object) -> bytes:
    obj = json.loads(encode_record(META)[1])
    obj.update(changes)
    return json.dumps(obj).encode()


KEY = encode_record(META)[0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"not json", encode_record(META)[1]),
        (KEY, b"\xff\xfe"),
        (KEY, b"[]"),
        (b'{"transactional_id":"tx-1","v":1}', encode_record(META)[1]),
        (b'{"transactional_id":7,"v":0}', encode_record(META)[1]),
        (KEY, None),  # a tombstone: none is written yet
        (KEY, _value(v=1)),
        (KEY, _value(transactional_id="tx-2")),
        (KEY, _value(state="Dead")),
        (KEY, _value(state=3)),
        (KEY, _value(producer_epoch=MAX_EPOCH + 1)),
        (KEY, _value(producer_epoch=-1)),
        (KEY, _value(producer_epoch=True)),
        (KEY, _value(producer_id=-5)),
        (KEY, _value(producer_id="4000")),
        (KEY, _value(timeout_ms=0)),
        (KEY, _value(partitions=[["a"]])),
        (KEY, _value(partitions=[["a", "0"]])),
        (KEY, _value(partitions="a-0")),
        (KEY, _value(group_ids=[1])),
        (KEY, _value(ended_by="admin")),
        (KEY, _value(ended_by="")),  # a Prepare state always says who ended the transaction
        (KEY, _value(state="Ongoing")),  # ... and an Ongoing one never does
        (KEY, _value(start_time_ms=None)),
        (KEY, _value(last_update_ms=1.5)),
    ],
)
def test_malformed_records_raise_value_error(key: bytes, value: bytes | None) -> None:
    with pytest.raises(ValueError):
        decode_record(key, value)


def test_a_missing_field_raises_value_error() -> None:
    for field in json.loads(encode_record(META)[1]):
        if field == "transaction_version":
            continue  # added later: optional (the next test)
        obj = json.loads(encode_record(META)[1])
        del obj[field]
        with pytest.raises(ValueError):
            decode_record(KEY, json.dumps(obj).encode())


def test_a_record_without_transaction_version_is_tv2_and_tv1_round_trips() -> None:
    tv1 = replace(META, transaction_version=TV1)
    key, value = encode_record(tv1)
    assert json.loads(value)["transaction_version"] == TV1
    assert decode_record(key, value) == tv1
    old = json.loads(value)
    del old["transaction_version"]  # a record written before TV1 existed
    assert decode_record(key, json.dumps(old).encode()).transaction_version == TV2


@pytest.mark.parametrize(
    ("state", "ended_by", "version"),
    [
        ("PrepareCommit", "client", 3),
        ("PrepareCommit", "client", 0),
        ("PrepareAbort", "timeout", 1),  # a timeout abort always bumps: TV2
        ("PrepareAbort", "fence", 1),
        ("Ongoing", "", 1),
    ],
)
def test_a_transaction_version_that_does_not_fit_raises_value_error(state: str, ended_by: str, version: int) -> None:
    obj = json.loads(encode_record(META)[1])
    obj.update(state=state, ended_by=ended_by, transaction_version=version)
    with pytest.raises(ValueError):
        decode_record(KEY, json.dumps(obj).encode())
