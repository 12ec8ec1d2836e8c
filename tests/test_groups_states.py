"""The group state table (coordinator/groups/state.py), walked as h11's tests walk theirs.

- Every (from, to) pair: the moves the table allows succeed, every other one
  raises ``IllegalGroupTransition`` naming both states and leaves the group
  where it was. The allowed moves are written out here once more, so that a
  change to the table is a visible change to this test.
- The real coordinator, driven through one group's life, makes exactly the
  moves expected of each call and between them uses every edge of the table.
  (Random histories in test_groups_properties.py run through the same
  checked method, so an illegal move there fails that test too.)
"""

from __future__ import annotations

from itertools import product

import pytest

from coordinator.groups import Group, GroupState
from coordinator.groups.state import VALID_PREVIOUS_STATES, IllegalGroupTransition
from tests.test_groups_support import Driver

EMPTY, PREPARING, COMPLETING, STABLE, DEAD = (
    GroupState.EMPTY,
    GroupState.PREPARING_REBALANCE,
    GroupState.COMPLETING_REBALANCE,
    GroupState.STABLE,
    GroupState.DEAD,
)

# Kafka's validPreviousStates, except that only Empty may become Dead (see state.py's docstring).
ALLOWED = {
    (EMPTY, PREPARING),
    (COMPLETING, PREPARING),
    (STABLE, PREPARING),
    (PREPARING, COMPLETING),
    (COMPLETING, STABLE),
    (PREPARING, EMPTY),
    (EMPTY, DEAD),
}

Move = tuple[GroupState, GroupState]


def test_the_table_is_the_written_list() -> None:
    assert {(old, new) for new, olds in VALID_PREVIOUS_STATES.items() for old in olds} == ALLOWED
    assert set(VALID_PREVIOUS_STATES) == set(GroupState)


@pytest.mark.parametrize(("old", "new"), list(product(GroupState, GroupState)))
def test_every_pair_is_allowed_or_refused_by_the_table(old: GroupState, new: GroupState) -> None:
    group = Group("g", initial_state=old)
    if (old, new) in ALLOWED:
        group.transition_to(new)
        assert group.state is new
        return
    with pytest.raises(IllegalGroupTransition) as refused:
        group.transition_to(new)
    assert (refused.value.group_id, refused.value.current, refused.value.new) == ("g", old, new)
    assert f"from {old} to {new}" in str(refused.value)
    assert group.state is old


def test_dead_is_final_and_every_state_is_reachable_from_empty() -> None:
    assert not [new for old, new in ALLOWED if old is DEAD]
    reached, frontier = {EMPTY}, [EMPTY]
    while frontier:
        here = frontier.pop()
        for old, new in ALLOWED:
            if old is here and new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(GroupState)


def test_state_is_read_only_outside_transition_to() -> None:
    group = Group("g")
    with pytest.raises(AttributeError):
        group.state = STABLE  # type: ignore[misc]
    assert group.state is EMPTY


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[Move]:
    """Every move the coordinator makes, recorded around the real ``Group.transition_to``."""
    seen: list[Move] = []
    checked = Group.transition_to

    def recording(group: Group, new: GroupState) -> None:
        old = group.state
        checked(group, new)
        seen.append((old, new))

    monkeypatch.setattr(Group, "transition_to", recording)
    return seen


def test_one_group_life_walks_every_edge_of_the_table(moves: list[Move]) -> None:
    d = Driver()  # no initial rebalance delay
    walked: set[Move] = set()

    def step(expected: list[Move]) -> None:
        assert moves == expected
        walked.update(moves)
        moves.clear()

    first = d.join_answer(d.join("g"))  # the only member has joined: the join phase completes at once
    step([(EMPTY, PREPARING), (PREPARING, COMPLETING)])
    d.sync("g", first.member_id, first.generation, {first.member_id: b"a"})
    step([(COMPLETING, STABLE)])
    second = d.join("g")  # a new member: the first must rejoin
    step([(STABLE, PREPARING)])
    d.join("g", first.member_id)
    step([(PREPARING, COMPLETING)])
    d.leave("g", d.join_answer(second).member_id)  # the first has not rejoined since
    step([(COMPLETING, PREPARING)])
    assert d.tick(2000) == (("g", first.member_id),)  # its session ran out: nobody is left
    step([(PREPARING, EMPTY)])
    d.delete("g")
    step([(EMPTY, DEAD)])
    assert walked == ALLOWED and "g" not in d.coordinator.groups
