"""The decommission plan (coordinator/metadata/decommission.py): least-loaded, rack-aware, in place."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.metadata.decommission import plan_decommission


def test_the_node_is_replaced_in_place_by_the_least_loaded_broker() -> None:
    partitions = {("t", 0): [1, 2, 3], ("t", 1): [2, 3, 1], ("t", 2): [2, 3, 4], ("u", 0): [1]}
    plan = plan_decommission(partitions, dict.fromkeys([1, 2, 3, 4, 5], ""), node=1)
    assert plan == {("t", 0): [5, 2, 3], ("t", 1): [2, 3, 4], ("u", 0): [5]}


def test_a_rack_none_of_the_others_is_on_comes_first() -> None:
    racks = {1: "a", 2: "b", 3: "c", 4: "c", 5: "a"}
    plan = plan_decommission({("t", 0): [1, 2, 3]}, racks, node=1)
    assert plan == {("t", 0): [5, 2, 3]}  # 4 has fewer replicas but shares rack c with 3


def test_a_partition_no_broker_can_take_is_named() -> None:
    with pytest.raises(ValueError, match="t-0: no broker can take node 1's replica"):
        plan_decommission({("t", 0): [1, 2, 3]}, dict.fromkeys([1, 2, 3], ""), node=1)


@settings(max_examples=200, deadline=None)
@given(
    brokers=st.integers(3, 6),
    racks=st.integers(1, 3),
    assignment=st.lists(st.permutations(range(1, 7)), min_size=1, max_size=12),
    rf=st.integers(1, 2),
)
def test_the_plan_empties_the_node_keeping_order_and_racks_apart(
    brokers: int, racks: int, assignment: list[list[int]], rf: int
) -> None:
    ids = list(range(1, brokers + 1))
    partitions = {("t", i): [r for r in a if r <= brokers][:rf] for i, a in enumerate(assignment)}
    rack_of = {b: "abc"[b % racks] for b in ids}
    plan = plan_decommission(partitions, rack_of, node=1)
    assert set(plan) == {k for k, rs in partitions.items() if 1 in rs}
    for key, target in plan.items():
        old = partitions[key]
        assert 1 not in target and len(set(target)) == len(target) == len(old)
        assert [r for r in target if r in old] == [r for r in old if r != 1]  # the others keep their order
        (new,) = set(target) - set(old)
        others = {rack_of[r] for r in old if r != 1}
        free_racks = {rack_of[b] for b in ids if b != 1 and b not in old} - others
        if racks > 1 and free_racks:
            assert rack_of[new] not in others, (old, target, rack_of)
