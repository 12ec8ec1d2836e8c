"""Offset commit fencing, offset fetch, and the admin views (list, describe, delete, reset).

Proves the rules of coordinator/groups/offsets.py and admin.py: commits
from a stale generation or an unknown member are refused (ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID) and change nothing; members may commit while the group
prepares a rebalance; simple (generation -1) commits only reach Empty
groups; delete and reset only touch Empty groups and write tombstones.
"""

from __future__ import annotations

from coordinator.groups import GroupState, OffsetCommitKey, decode_record
from ketch.assignors import TopicPartition, encode_assignment
from ketch.errors import ErrorCode
from tests.test_groups_support import Driver, check_invariants

E = ErrorCode
A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)


def test_member_commit_is_fetched_and_written_to_the_log() -> None:
    d = Driver()
    [(member, gen)] = d.stable_group("g", 1)
    assert d.commit("g", member, gen, {A0: 42}, metadata="m") == {A0: E.NONE}
    fetched = d.coordinator.fetch_offsets("g", [A0, A1]).offsets
    assert fetched[A0].offset == 42 and fetched[A0].metadata == "m" and fetched[A1].offset == -1
    assert fetched[A0].commit_timestamp_ms == 1_700_000_000_000 + d.now
    record = decode_record(*d.log[-1])
    assert record.key == OffsetCommitKey("g", "a", 0)
    check_invariants(d)


def test_stale_generation_and_unknown_member_commits_are_fenced() -> None:
    d = Driver()
    (leader, gen), (_follower, _) = d.stable_group("g", 2)
    d.commit("g", leader, gen, {A0: 5})
    assert d.commit("g", leader, gen - 1, {A0: 9}) == {A0: E.ILLEGAL_GENERATION}
    assert d.commit("g", "zombie", gen, {A0: 9}) == {A0: E.UNKNOWN_MEMBER_ID}
    assert d.commit("g", "", -1, {A0: 9}) == {A0: E.UNKNOWN_MEMBER_ID}  # simple commit to a live group
    assert d.commit("missing", leader, gen, {A0: 9}) == {A0: E.UNKNOWN_MEMBER_ID}
    assert d.commit("", leader, gen, {A0: 9}) == {A0: E.INVALID_GROUP_ID}
    assert d.committed("g") == {A0: 5}
    assert "missing" not in d.coordinator.groups
    check_invariants(d)


def test_commits_during_a_rebalance() -> None:
    d = Driver()
    (leader, gen), (follower, _) = d.stable_group("g", 2)
    d.join("g", leader)  # PreparingRebalance: the current generation may still commit (before revoking)
    assert d.commit("g", follower, gen, {A0: 1}) == {A0: E.NONE}
    answer = d.join_answer(d.join("g", follower))  # CompletingRebalance
    assert d.commit("g", follower, answer.generation, {A0: 2}) == {A0: E.REBALANCE_IN_PROGRESS}
    assert d.commit("g", follower, gen, {A0: 2}) == {A0: E.ILLEGAL_GENERATION}
    assert d.committed("g") == {A0: 1}
    check_invariants(d)


def test_simple_commits_create_and_use_an_empty_group() -> None:
    d = Driver()
    assert d.commit("solo", "", -1, {A0: 7, A1: 8}) == {A0: E.NONE, A1: E.NONE}
    assert d.state("solo") is GroupState.EMPTY and d.committed("solo") == {A0: 7, A1: 8}
    assert d.commit("solo", "", -1, {A0: 1}, metadata="x" * 5000) == {A0: E.OFFSET_METADATA_TOO_LARGE}
    assert d.commit("solo", "", -1, {A0: -3, A1: 9}) == {A0: E.INVALID_REQUEST, A1: E.NONE}
    assert d.committed("solo") == {A0: 7, A1: 9}
    assert d.commit("other", "", -1, {A0: -1}) == {A0: E.INVALID_REQUEST}
    assert "other" not in d.coordinator.groups  # nothing committed, nothing kept
    check_invariants(d)


def test_fetch_of_unknown_group_is_empty() -> None:
    d = Driver()
    assert d.coordinator.fetch_offsets("nope").offsets == {}
    assert d.coordinator.fetch_offsets("nope", [A0]).offsets[A0].offset == -1
    assert d.coordinator.fetch_offsets("").error == E.INVALID_GROUP_ID


def test_list_and_describe_groups() -> None:
    d = Driver()
    (leader, gen), (follower, _) = d.stable_group("g", 2)
    d.commit("solo", "", -1, {A0: 1})
    listing = d.coordinator.list_groups()
    assert [(g.group_id, g.protocol_type, g.state) for g in listing] == [
        ("g", "consumer", GroupState.STABLE),
        ("solo", "", GroupState.EMPTY),
    ]
    desc = d.coordinator.describe_group("g")
    assert (desc.state, desc.protocol, desc.generation, desc.leader) == (GroupState.STABLE, "range", gen, leader)
    assert {m.member_id for m in desc.members} == {leader, follower}
    assert all(m.client_host == "/127.0.0.1" for m in desc.members)
    assert d.coordinator.describe_group("missing").state is GroupState.DEAD


def test_describe_decodes_consumer_assignments() -> None:
    d = Driver()
    answer = d.join_answer(d.join("g"))
    d.sync("g", answer.member_id, answer.generation, {answer.member_id: encode_assignment([A1, A0])})
    [member] = d.coordinator.describe_group("g").members
    assert member.partitions == (A0, A1)


def test_delete_only_an_empty_group_with_tombstones() -> None:
    d = Driver()
    [(member, gen)] = d.stable_group("g", 1)
    d.commit("g", member, gen, {A0: 3, A1: 4})
    assert d.delete("g") == E.NON_EMPTY_GROUP
    d.leave("g", member)
    before = len(d.log)
    assert d.delete("g") == E.NONE
    tombstones = [decode_record(k, v) for k, v in d.log[before:]]
    assert [r.value for r in tombstones] == [None, None, None]
    assert [type(r.key).__name__ for r in tombstones] == ["OffsetCommitKey", "OffsetCommitKey", "GroupMetadataKey"]
    assert "g" not in d.coordinator.groups and "g" not in d.replayed().groups
    assert d.delete("g") == E.GROUP_ID_NOT_FOUND
    check_invariants(d)


def test_reset_offsets_only_when_empty_and_none_deletes() -> None:
    d = Driver()
    [(member, _gen)] = d.stable_group("g", 1)
    assert d.reset("g", {A0: 0}) == E.NON_EMPTY_GROUP
    d.leave("g", member)
    assert d.reset("g", {A0: 10, A1: 11}) == E.NONE
    assert d.committed("g") == {A0: 10, A1: 11}
    d.reset("g", {A1: None})
    assert d.committed("g") == {A0: 10}
    assert decode_record(*d.log[-1]).value is None
    assert d.reset("g", {A0: -5}) == E.INVALID_REQUEST
    d.reset("fresh", {A0: 1})  # an unknown group is Empty
    assert d.committed("fresh") == {A0: 1}
    check_invariants(d)
