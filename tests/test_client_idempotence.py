"""The idempotent producer's sequence bookkeeping (ketch/idempotence.py) against a model broker.

A Hypothesis state machine plays the accumulator (drain the head batch of a
partition), the network (deliver requests in any order, lose answers) and
a broker that applies the shared producer-state rules (epoch, exact
duplicates of the last five batches, sequence continuity, forgotten state).
After every step: no batch is stored twice, stored batches of a partition are
in creation order, a (producer id, epoch, partition, sequence) names one batch,
and every acknowledged batch is stored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ketch.idempotence import (
    MAX_EPOCH,
    NO_SEQUENCE,
    IdempotentProducerState,
    increment_sequence,
)

TPS = ("p0", "p1")
TTL = 1000  # the client's confirm_ttl_ms and the model broker's producer expiration


@dataclass(eq=False)
class Batch:
    tp: str
    id: int
    count: int
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = NO_SEQUENCE

    @property
    def record_count(self) -> int:
        return self.count

    def stamp(self) -> tuple[int, int, int]:
        return self.producer_id, self.producer_epoch, self.base_sequence


@dataclass
class ProducerEntry:
    epoch: int
    last_sequence: int
    recent: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=5))  # first, last, batch id


class ModelBroker:
    """One partition leader's producer-state rules (the shared decisions of issue 13)."""

    def __init__(self) -> None:
        self.log: list[int] = []  # batch ids in offset order
        self.producers: dict[int, ProducerEntry] = {}

    def append(self, batch_id: int, stamp: tuple[int, int, int], count: int) -> str:
        pid, epoch, first = stamp
        last = increment_sequence(first, count - 1)
        entry = self.producers.get(pid)
        if entry is not None:
            if epoch < entry.epoch:
                return "INVALID_PRODUCER_EPOCH"
            if epoch == entry.epoch and any(f == first and la == last for f, la, _ in entry.recent):
                return "NONE"  # a duplicate: answered, not stored again
            if epoch > entry.epoch and first != 0:
                return "OUT_OF_ORDER_SEQUENCE_NUMBER"
            if epoch == entry.epoch and first != increment_sequence(entry.last_sequence, 1):
                return "OUT_OF_ORDER_SEQUENCE_NUMBER"
            if epoch > entry.epoch:
                entry = None
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(epoch, last)
        entry.last_sequence = last
        entry.recent.append((first, last, batch_id))
        self.log.append(batch_id)
        return "NONE"


class IdempotenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = IdempotentProducerState(confirm_ttl_ms=TTL)
        self.now = 0
        self.last_append = dict.fromkeys(TPS, 0)
        self.state.set_producer(7, 0)
        self.queues: dict[str, deque[Batch]] = {tp: deque() for tp in TPS}
        self.brokers = {tp: ModelBroker() for tp in TPS}
        self.transit: list[tuple[Batch, tuple[int, int, int]]] = []
        self.next_id = 0
        self.acked: set[int] = set()
        self.done: set[int] = set()
        self.names: dict[tuple[str, int, int, int], int] = {}  # stored stamp -> batch id
        self.next_pid = 8

    def _reenqueue(self, b: Batch) -> None:
        q = self.queues[b.tp]
        i = 0
        while i < len(q) and q[i].id < b.id:
            i += 1
        q.insert(i, b)

    @rule(tp=st.sampled_from(TPS), count=st.integers(1, 3))
    def append(self, tp: str, count: int) -> None:
        self.queues[tp].append(Batch(tp, self.next_id, count))
        self.next_id += 1

    @rule(tp=st.sampled_from(TPS))
    def drain(self, tp: str) -> None:
        q = self.queues[tp]
        if q and self.state.drain(q[0], self.now):
            b = q.popleft()
            assert b.producer_id == self.state.producer_id and b.base_sequence >= 0
            self.transit.append((b, b.stamp()))
            assert len(self.state.in_flight(tp)) <= self.state.max_in_flight

    @rule(tp=st.sampled_from(TPS), answer=st.sampled_from(["deliver", "lose", "drop", "retriable"]))
    def respond(self, tp: str, answer: str) -> None:
        """The oldest request of a partition reaches the broker (one connection keeps their order) and is
        answered; or its answer is lost after the broker acted on it; or it is dropped unread."""
        i = next((i for i, (b, _) in enumerate(self.transit) if b.tp == tp), None)
        if i is None:
            return
        b, stamp = self.transit.pop(i)
        code = "NOT_LEADER_OR_FOLLOWER"
        if answer not in ("retriable", "drop"):
            code = self.brokers[b.tp].append(b.id, stamp, b.count)
            self.last_append[b.tp] = self.now
            if code == "NONE" and b.id in self.brokers[b.tp].log:
                key = (b.tp, *stamp)
                assert self.names.setdefault(key, b.id) == b.id, f"{key} names two batches"
        if answer in ("lose", "drop"):
            self._reenqueue(b)  # a transport failure: the same stamp goes again
            return
        if code == "NONE":
            self.state.acked(b, self.now)
            self.acked.add(b.id)
            self.done.add(b.id)
        elif b.stamp() != stamp:
            self._reenqueue(b)  # an answer about a stamp rewritten since
        elif code in ("OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID"):
            self.state.sequence_error(b)
            self._reenqueue(b)
        elif code == "NOT_LEADER_OR_FOLLOWER":
            self._reenqueue(b)
        else:
            self.state.failed(b)
            self.done.add(b.id)

    @rule(tp=st.sampled_from(TPS))
    def give_up(self, tp: str) -> None:
        """The delivery timeout of the partition's head batch passed (sent or not)."""
        q = self.queues[tp]
        if q:
            b = q.popleft()
            self.state.failed(b)
            self.done.add(b.id)

    @rule(ms=st.integers(0, 2 * TTL))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule(tp=st.sampled_from(TPS))
    def broker_forgets_producers(self, tp: str) -> None:
        """Producer state expired: nothing from the producer for producer.id.expiration.ms, which is longer than
        delivery_timeout_ms, so every batch sent before has been given up or acknowledged by then."""
        if self.now - self.last_append[tp] >= TTL and not self.state.in_flight(tp):
            self.brokers[tp].producers.clear()

    @rule()
    def new_producer_id_when_needed(self) -> None:
        if self.state.needs_producer_id:
            self.state.set_producer(self.next_pid, 0)
            self.next_pid += 1

    @invariant()
    def nothing_stored_twice_and_in_order(self) -> None:
        for broker in self.brokers.values():
            assert len(broker.log) == len(set(broker.log)), f"duplicate in {broker.log}"
            assert broker.log == sorted(broker.log), f"out of order: {broker.log}"

    @invariant()
    def acknowledged_means_stored(self) -> None:
        stored = {i for broker in self.brokers.values() for i in broker.log}
        assert self.acked <= stored

    def teardown(self) -> None:
        """With the network healthy, everything still queued gets through."""
        for _ in range(200):
            if self.state.needs_producer_id:
                self.new_producer_id_when_needed()
            for tp in TPS:
                self.drain(tp)
            while self.transit:
                b, stamp = self.transit.pop(0)
                self.transit.insert(0, (b, stamp))
                self.respond_first()
            if not any(self.queues.values()) and not self.transit:
                break
        assert not any(self.queues.values()), "batches stuck after the network healed"
        assert self.done | self.acked >= set(range(self.next_id))
        self.nothing_stored_twice_and_in_order()

    def respond_first(self) -> None:
        b, stamp = self.transit.pop(0)
        code = self.brokers[b.tp].append(b.id, stamp, b.count)
        if code == "NONE":
            self.state.acked(b, self.now)
            self.acked.add(b.id)
            self.done.add(b.id)
        elif b.stamp() != stamp or code in ("OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID"):
            if b.stamp() == stamp:
                self.state.sequence_error(b)
            self._reenqueue(b)
        else:
            self.state.failed(b)
            self.done.add(b.id)


IdempotenceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_idempotence_state_machine = IdempotenceMachine.TestCase


def test_sequences_wrap_past_the_largest() -> None:
    assert increment_sequence(2**31 - 2, 1) == 2**31 - 1
    assert increment_sequence(2**31 - 1, 1) == 0
    assert increment_sequence(2**31 - 2, 5) == 3


def test_at_most_five_in_flight_and_retries_wait_their_turn() -> None:
    s = IdempotentProducerState()
    s.set_producer(1, 0)
    head = Batch("p0", -1, 1)
    # one batch alone until the broker has acknowledged one of this producer id and epoch
    assert s.drain(head, 0) and not s.drain(Batch("p0", -2, 1), 0)
    s.acked(head, 0)
    batches = [Batch("p0", i, 2) for i in range(6)]
    assert [s.drain(b, 10) for b in batches] == [True] * 5 + [False]
    assert [b.base_sequence for b in batches[:5]] == [1, 3, 5, 7, 9]
    # batch 1 failed retriably, 2 got OUT_OF_ORDER behind it: 2 waits until 0 and 1 are done
    s.sequence_error(batches[2])
    assert not s.drain(batches[2], 10) and not s.drain(batches[1], 10)
    s.acked(batches[0], 10)
    assert s.drain(batches[1], 10) and batches[1].base_sequence == 3  # a retry keeps its sequence
    assert s.epoch == 0


def test_out_of_order_at_the_head_bumps_the_epoch_and_restarts_at_zero() -> None:
    s = IdempotentProducerState()
    s.set_producer(1, 3)
    first = Batch("p0", -1, 1)
    assert s.drain(first, 0)
    s.acked(first, 0)
    a, b, c = Batch("p0", 0, 1), Batch("p0", 1, 2), Batch("p1", 2, 1)
    assert s.drain(a, 0) and s.drain(b, 0) and s.drain(c, 0)
    assert a.base_sequence == 1
    s.sequence_error(a)
    assert s.epoch == 4
    assert s.drain(a, 0) and a.stamp() == (1, 4, 0) and b.stamp() == (1, 4, 1)
    # p1 is stale: nothing new drains there until its in-flight batch completes
    d = Batch("p1", 3, 1)
    assert not s.drain(d, 0)
    s.acked(c, 0)
    assert s.drain(d, 0) and d.stamp() == (1, 4, 0)


def test_epoch_overflow_needs_a_new_producer_id() -> None:
    s = IdempotentProducerState()
    s.set_producer(1, MAX_EPOCH)
    a = Batch("p0", 0, 1)
    assert s.drain(a, 0)
    s.failed(a)
    assert s.needs_producer_id and not s.drain(Batch("p0", 1, 1), 0)
    s.set_producer(2, 0)
    b = Batch("p0", 1, 1)
    assert s.drain(b, 0) and b.stamp() == (2, 0, 0)


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        IdempotentProducerState(6)
    with pytest.raises(ValueError):
        IdempotentProducerState().set_producer(1, MAX_EPOCH + 1)


def test_a_partition_quiet_for_the_ttl_sends_one_batch_until_acknowledged() -> None:
    s = IdempotentProducerState(confirm_ttl_ms=100)
    s.set_producer(1, 0)
    a, b, c = Batch("p0", 0, 1), Batch("p0", 1, 1), Batch("p0", 2, 1)
    assert s.drain(a, 0)
    s.acked(a, 0)
    assert s.drain(b, 50) and s.drain(c, 50)  # confirmed recently: pipelined
    s.acked(b, 60)
    s.acked(c, 60)
    d, e = Batch("p0", 3, 1), Batch("p0", 4, 1)
    assert s.drain(d, 200) and not s.drain(e, 200)  # the broker may have forgotten the producer
