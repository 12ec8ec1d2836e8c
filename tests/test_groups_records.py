"""Offsets-log records: the byte format, and recovery of groups by replay after a coordinator failover.

Proves that records encode to stable, explicit bytes (JSON, never pickle)
and decode back equal; that malformed bytes raise ValueError; that a new
coordinator loaded from the log has the committed offsets and the Stable
groups (members, generation, assignments) of the old one, keeps fencing
stale generations, and expires members that died with the old coordinator.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.groups import (
    CommittedOffset,
    GroupMetadataKey,
    GroupMetadataValue,
    GroupRecord,
    GroupState,
    MemberMetadata,
    OffsetCommitKey,
    decode_record,
    encode_record,
    offsets_partition,
)
from ketch.assignors import TopicPartition
from ketch.errors import ErrorCode
from tests.test_groups_support import Driver, check_invariants

E = ErrorCode
A0 = TopicPartition("a", 0)
text = st.text(max_size=12)
ints = st.integers(-(2**40), 2**40)

offset_records = st.builds(
    GroupRecord,
    st.builds(OffsetCommitKey, text, text, ints),
    st.none() | st.builds(CommittedOffset, ints, ints, text, ints),
)
members = st.builds(MemberMetadata, text, text, text, ints, ints, st.binary(max_size=20), st.binary(max_size=20))
group_records = st.builds(
    GroupRecord,
    st.builds(GroupMetadataKey, text),
    st.none() | st.builds(GroupMetadataValue, text, ints, text, text, st.lists(members, max_size=3).map(tuple)),
)


@settings(max_examples=200, deadline=None)
@given(offset_records | group_records)
def test_records_round_trip_through_stable_bytes(record: GroupRecord) -> None:
    key, value = encode_record(record)
    assert decode_record(key, value) == record
    assert encode_record(record) == (key, value)
    assert (value is None) == (record.value is None)


def test_keys_depend_only_on_key_fields_and_the_format_is_explicit() -> None:
    one = encode_record(GroupRecord(OffsetCommitKey("g", "a", 0), CommittedOffset(1)))
    two = encode_record(GroupRecord(OffsetCommitKey("g", "a", 0), None))
    assert one[0] == two[0] == b'{"group":"g","partition":0,"topic":"a","type":"offset","v":0}'
    assert one[1] == b'{"commit_timestamp_ms":0,"leader_epoch":-1,"metadata":"","offset":1,"v":0}'
    assert encode_record(GroupRecord(GroupMetadataKey("g"), None))[0] != one[0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"\x80\x04pickle", None),
        (b'{"type":"offset","v":1,"group":"g","topic":"a","partition":0}', None),
        (b'{"type":"what","v":0,"group":"g"}', None),
        (b'{"type":"offset","v":0,"group":"g","topic":"a","partition":true}', None),
        (b'{"type":"offset","v":0,"group":"g","topic":"a","partition":0}', b'{"v":0,"offset":"1"}'),
        (b'{"type":"group","v":0,"group":"g"}', b'{"v":0,"protocol_type":"c","generation":1,"protocol":"r",'),
        (
            b'{"type":"group","v":0,"group":"g"}',
            b'{"v":0,"protocol_type":"c","generation":1,"protocol":"r","leader":"m","members":[{"member_id":1}]}',
        ),
    ],
)
def test_malformed_records_raise_value_error(key: bytes, value: bytes | None) -> None:
    with pytest.raises(ValueError):
        decode_record(key, value)


def test_offsets_partition_is_stable_and_in_range() -> None:
    assert offsets_partition("group-a", 50) == offsets_partition("group-a", 50)
    assert all(0 <= offsets_partition(f"g{i}", 7) < 7 for i in range(100))
    assert len({offsets_partition(f"g{i}", 7) for i in range(100)}) == 7


def test_failover_restores_stable_groups_and_offsets_and_keeps_fencing() -> None:
    d = Driver()
    (leader, gen), (follower, _) = d.stable_group("g", 2)
    d.commit("g", follower, gen, {A0: 99})
    d.commit("solo", "", -1, {A0: 5})
    check_invariants(d)
    new = d.replayed()
    assert new.fetch_offsets("g").offsets[A0].offset == 99 and new.fetch_offsets("solo").offsets[A0].offset == 5
    desc = new.describe_group("g")
    assert (desc.state, desc.generation, desc.leader) == (GroupState.STABLE, gen, leader)
    assert {m.member_id: m.assignment for m in desc.members} == {
        leader: f"{leader}@{gen}".encode(),
        follower: f"{follower}@{gen}".encode(),
    }
    assert new.heartbeat("g", follower, gen, now_ms=d.now).error == E.NONE
    assert new.heartbeat("g", follower, gen - 1, now_ms=d.now).error == E.ILLEGAL_GENERATION
    # A follower rejoining with its full protocol list differs from the one stored: a rebalance (as Kafka).
    d.coordinator = new
    d.join("g", follower)
    assert d.state("g") is GroupState.PREPARING_REBALANCE


def test_members_that_died_with_the_old_coordinator_expire_one_session_after_load() -> None:
    d = Driver()
    [(member, _gen)] = d.stable_group("g", 1)
    d.now += 5000  # the failover took a while; the session clock restarts at load
    d.coordinator = d.replayed()
    assert d.tick(999) == ()
    assert d.tick(1) == (("g", member),)
    assert d.state("g") is GroupState.EMPTY
    check_invariants(d)


def test_replay_drops_deleted_groups_and_a_recreated_group_starts_over() -> None:
    d = Driver()
    [(member, gen)] = d.stable_group("g", 1)
    d.commit("g", member, gen, {A0: 1})
    d.leave("g", member)
    assert d.delete("g") == E.NONE
    assert "g" not in d.replayed().groups
    answer = d.join_answer(d.join("g"))
    assert answer.generation == 1
    d.sync("g", answer.member_id, 1, {})
    assert d.replayed().describe_group("g").generation == 1
    check_invariants(d)
