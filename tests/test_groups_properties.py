"""Hypothesis over random histories of join/sync/heartbeat/leave/tick/commit/reset/delete on two groups.

After every step ``check_invariants`` (test_groups_support.py) holds —
Stable members have assignments and the leader is a member, parked requests
only in the states that park them, every request answered exactly once or
still parked, and a coordinator replayed from the log has the same committed
offsets and, for Stable and Empty groups, the same group metadata — and:
- a group's generation never decreases while the group exists;
- committed offsets change only through accepted commits, resets and
  deletions: the test keeps its own model of them from the responses alone
  and compares it with OffsetFetch after every step.
Every state change goes through ``Group.transition_to``, which raises on a
move outside state.py's table, so no history may make one either.

The "clients" here are deliberately sloppy: they rejoin, sync and commit
with stale generations, forget to heartbeat and use ids of departed members.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.groups import GroupConfig, GroupState, JoinResponse
from ketch.assignors import TopicPartition
from ketch.errors import ErrorCode
from tests.test_groups_support import Driver, check_invariants

GROUPS = ("g1", "g2")
PARTITIONS = [TopicPartition("a", p) for p in range(3)]
PROTOCOL_CHOICES = ((("range", b"1"), ("roundrobin", b"1")), (("roundrobin", b"2"),), (("range", b"3"),))

group = st.sampled_from(("g1", "g1", "g1", "g2"))
# Which member acts: 0-3 pick (modulo) one of the members the group has ever had, departed ones included;
# 4 is a new member (for join) or a member id of "" (otherwise).
who = st.integers(0, 4)
steps = st.one_of(
    st.tuples(st.just("join"), group, who, st.sampled_from([0, 0, 0, 1, 2])),
    st.tuples(st.just("join"), group, st.just(4), st.just(0)),  # new members, often
    st.tuples(st.just("sync"), group, who, st.sampled_from(["ok", "ok", "stale", "partial"])),
    st.tuples(st.just("sync"), group, who, st.just("ok")),
    st.tuples(st.just("heartbeat"), group, who, st.sampled_from([False, False, False, True])),
    st.tuples(st.just("leave"), group, who),
    st.tuples(st.just("tick"), st.sampled_from([0, 50, 100, 200, 350, 700])),
    st.tuples(st.just("heartbeat_all"), group),
    st.tuples(st.just("commit"), group, who, st.sampled_from(["current", "stale", "simple"]), st.integers(0, 2)),
    st.tuples(st.just("reset"), group, st.integers(0, 2), st.none() | st.integers(0, 100)),
    st.tuples(st.just("delete"), group),
    st.tuples(st.just("rejoin_all"), group),  # well-behaved rounds, so that Stable is reached often
    st.tuples(st.just("sync_all"), group),
)


class History:
    def __init__(self, delay_ms: int) -> None:
        self.d = Driver(GroupConfig(min_session_timeout_ms=10, initial_rebalance_delay_ms=delay_ms))
        self.members: dict[str, list[str]] = {g: [] for g in GROUPS}
        self.joins: dict[tuple[str, str], int] = {}  # (group, member) → its latest join request
        self.expected: dict[str, dict[TopicPartition, int]] = {g: {} for g in GROUPS}
        self.generations: dict[str, int] = {}
        self.offset = 0

    def member(self, g: str, i: int) -> str:
        known = self.members[g]
        return known[i % len(known)] if i < 4 and known else ""

    def last_join(self, g: str, m: str) -> JoinResponse | None:
        answer = self.d.answers.get(self.joins.get((g, m), -1))
        return answer if isinstance(answer, JoinResponse) and answer.error == ErrorCode.NONE else None

    def generation(self, g: str, m: str) -> int:
        answer = self.last_join(g, m)
        return answer.generation if answer else -1

    def run(self, step: tuple[Any, ...]) -> None:
        kind, args = step[0], step[1:]
        getattr(self, kind)(*args)
        for g in list(self.generations):
            if g not in self.d.coordinator.groups:
                del self.generations[g]
        for g, grp in self.d.coordinator.groups.items():
            assert grp.generation >= self.generations.get(g, 0), "generation went backwards"
            self.generations[g] = grp.generation
        for g in GROUPS:
            assert self.d.committed(g) == self.expected[g]
        check_invariants(self.d)

    def join(self, g: str, i: int, protocols: int) -> None:
        m = self.member(g, i)
        request = self.d.join(g, m, PROTOCOL_CHOICES[protocols], session_ms=1000, rebalance_ms=300 + 100 * protocols)
        if m == "":
            m = f"member-{self.d._next_member}"
            self.members[g].append(m)
        self.joins[(g, m)] = request

    def sync(self, g: str, i: int, how: str) -> None:
        self.sync_member(g, self.member(g, i), how)

    def sync_member(self, g: str, m: str, how: str) -> None:
        """``how``: "ok", "stale" (generation - 1) or "partial" (a leader that leaves one member out)."""
        answer = self.last_join(g, m)
        generation = self.generation(g, m) - (1 if how == "stale" else 0)
        assignments = {}
        if answer is not None and answer.leader == m:
            assignments = {member: f"{member}@{generation}".encode() for member, _ in answer.members}
            if how == "partial":
                assignments.popitem()
        self.d.sync(g, m, generation, assignments)

    def heartbeat(self, g: str, i: int, stale: bool) -> None:
        m = self.member(g, i)
        self.d.heartbeat(g, m, self.generation(g, m) - (1 if stale else 0))

    def leave(self, g: str, i: int) -> None:
        self.d.leave(g, self.member(g, i))

    def tick(self, advance_ms: int) -> None:
        self.d.tick(advance_ms)

    def commit(self, g: str, i: int, how: str, p: int) -> None:
        m = "" if how == "simple" else self.member(g, i)
        generation = {"current": self.generation(g, m), "stale": self.generation(g, m) - 1, "simple": -1}[how]
        self.offset += 1
        tp = PARTITIONS[p]
        errors = self.d.commit(g, m, generation, {tp: self.offset})
        if errors[tp] == ErrorCode.NONE:
            self.expected[g][tp] = self.offset

    def reset(self, g: str, p: int, offset: int | None) -> None:
        tp = PARTITIONS[p]
        if self.d.reset(g, {tp: offset}) == ErrorCode.NONE:
            if offset is None:
                self.expected[g].pop(tp, None)
            else:
                self.expected[g][tp] = offset

    def heartbeat_all(self, g: str) -> None:
        for m in list(self.d.coordinator.groups[g].members) if g in self.d.coordinator.groups else []:
            self.d.heartbeat(g, m, self.generation(g, m))

    def rejoin_all(self, g: str) -> None:
        for m in list(self.d.coordinator.groups[g].members) if g in self.d.coordinator.groups else []:
            self.joins[(g, m)] = self.d.join(g, m, PROTOCOL_CHOICES[0], session_ms=1000, rebalance_ms=300)

    def sync_all(self, g: str) -> None:
        for m in list(self.d.coordinator.groups[g].members) if g in self.d.coordinator.groups else []:
            self.sync_member(g, m, "ok")

    def delete(self, g: str) -> None:
        if self.d.delete(g) == ErrorCode.NONE:
            self.expected[g] = {}


@settings(max_examples=400, deadline=None)
@given(st.lists(steps, min_size=10, max_size=50), st.sampled_from([0, 0, 250]))
def test_random_histories_keep_the_group_invariants(history: list[tuple[Any, ...]], delay_ms: int) -> None:
    h = History(delay_ms)
    for step in history:
        h.run(step)


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=40))
def test_cooperative_clients_reach_stable_once_they_behave(history: list[tuple[Any, ...]]) -> None:
    """Liveness: after any history, members that rejoin and sync promptly get the group to Stable."""
    h = History(0)
    for step in history:
        h.run(step)
    for g in GROUPS:
        for _ in range(3):  # a rejoin can be needed per member that rebalanced meanwhile
            h.rejoin_all(g)
            h.d.tick(0)
            h.sync_all(g)
        if g in h.d.coordinator.groups:
            group_ = h.d.coordinator.groups[g]
            assert group_.state is (GroupState.STABLE if group_.members else GroupState.EMPTY)
        check_invariants(h.d)
