"""Hypothesis: random command sequences through command → records → replay keep every invariant.

The machine plays the driver of controller.py's contract: each command's
records are proposed as one entry at the next Raft index and replayed at
once (uncommitted); ``commit`` confirms them; ``failover`` loses or keeps the
uncommitted tail and continues on the same controller or on a standby built
from the committed log. A broker-side follower replays only committed
entries and keeps, per broker, the partition states that ``local_changes``
told that broker about. After every step:

- leader ∈ ISR ⊆ replicas (leader -1 when offline), replicas distinct, the
  ISR non-empty; a live partition's leader and ISR are unfenced brokers;
- committed leader and partition epochs never decrease;
- the follower's image equals the controller's committed image, and each
  broker's view from local changes equals its replicas in that image;
- the image survives a snapshot round trip (records; bytes at the end);
- a reassignment (start, replace, cancel; completed by an ISR change or a
  tick) lands on its target, or is refused and changes nothing;
- commands never change the image; a fresh topic's leaders are balanced
  over the unfenced brokers and its replicas are distinct, and so are the
  partitions added to a topic (which leave the old ones as they were);
- producer id blocks whose entries committed (the only ones a broker is ever
  answered with) never overlap, across failover, and all lie below the
  committed ``next_producer_id``;
- altered configs (topic overrides and cluster-wide values of
  ``unclean.leader.election.enable``, ``min.insync.replicas``,
  ``retention.ms``) keep every invariant above with the floors and election
  rules they imply, and survive snapshots and failover.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.metadata import (
    AlterPartitionResponse,
    Controller,
    ControllerConfig,
    ControllerResult,
    CreatePartitionsResponse,
    CreateTopicResponse,
    MetadataDelta,
    MetadataImage,
    MetadataRecord,
    PartitionRegistration,
    TopicIdPartition,
    image_from_records,
    image_to_records,
)
from coordinator.metadata.configs import BROKER_KEY_OF, AlterConfigsResource, ConfigChange, ConfigResource
from coordinator.metadata.reassignment import original_replicas, target_replicas
from coordinator.metadata.records import BROKER_RESOURCE, CLUSTER_WIDE, TOPIC_RESOURCE
from ketch.errors import ErrorCode, KetchError
from tests.test_metadata_support import check_invariants, check_snapshot

R = TypeVar("R")
TIMEOUT = 9000
BROKERS = st.integers(0, 4)
NAMES = st.sampled_from(["a", "b", "c"])
TARGETS = st.lists(BROKERS, max_size=4)  # may be empty or repeat a broker: refused


class MetadataMachine(RuleBasedStateMachine):
    @initialize(brokers=st.integers(1, 5), racks=st.booleans(), rf=st.integers(1, 3))
    def setup(self, brokers: int, racks: bool, rf: int) -> None:
        self.config = ControllerConfig(broker_session_timeout_ms=TIMEOUT)
        self.ctl = Controller(self.config)
        self.now = 0
        self.next_index = 1
        self.pending: list[tuple[int, list[MetadataRecord]]] = []
        self.follower = MetadataImage()
        self.views: dict[int, dict[TopicIdPartition, PartitionRegistration]] = {}
        self.epochs: dict[TopicIdPartition, tuple[int, int]] = {}
        self.contact: dict[int, int] = {}  # the test's own model of session clocks
        self.incarnations = 0
        self.topic_ids = 0
        self.blocks_pending: list[tuple[int, range]] = []  # (entry index, block), not committed yet
        self.blocks: list[range] = []  # committed: a broker may be using them
        for b in range(brokers):
            self.register(b, "xy"[b % 2] if racks else "")
        self.heartbeat_all()
        self.create_topic("a", 6, min(rf, brokers), 0, False)
        self.commit()

    # -- driver --

    def propose(self, command: Callable[[], ControllerResult[R]]) -> R:
        before = self.ctl.image
        result = command()
        assert self.ctl.image is before, "a command changed the image"
        if result.records:
            self.ctl.replay_batch(self.next_index, result.records, committed=False)
            self.pending.append((self.next_index, list(result.records)))
            self.next_index += 1
        return result.response

    def refused(self, code: ErrorCode, command: Callable[[], object]) -> None:
        before = self.ctl.image
        try:
            command()
        except KetchError as err:
            assert err.code == code, f"expected {code.name}, got {err}"
        else:
            raise AssertionError(f"expected {code.name}")
        assert self.ctl.image is before

    def follow(self, index: int, records: list[MetadataRecord]) -> None:
        delta = MetadataDelta(self.follower)
        delta.replay_batch(index, records)
        for b in range(5):
            view = self.views.setdefault(b, {})
            changes = delta.local_changes(b)
            for tp in changes.deletes:
                assert view.pop(tp, None) is not None, f"broker {b} told to delete {tp} it never had"
            for tp, lp in {**changes.leaders, **changes.followers}.items():
                view[tp] = lp.state
        self.follower = delta.apply()

    # -- rules --

    @rule()
    def commit(self) -> None:
        if self.pending:
            self.ctl.commit(self.pending[-1][0])
        for index, records in self.pending:
            self.follow(index, records)
        self.pending.clear()
        self.blocks += [block for _, block in self.blocks_pending]
        self.blocks_pending.clear()

    @rule(keep_tail=st.booleans(), standby=st.booleans())
    def failover(self, keep_tail: bool, standby: bool) -> None:
        """The active controller loses leadership; the tail either commits later or is lost."""
        tail, self.pending = self.pending, []
        if standby:
            self.ctl = Controller(self.config, self.follower)
        else:
            self.ctl.resign()
        assert self.ctl.image == self.follower
        if keep_tail:
            for index, records in tail:
                self.ctl.replay_batch(index, records)
                self.follow(index, records)
            self.blocks += [block for _, block in self.blocks_pending]
        self.blocks_pending.clear()  # lost entries: their callers were never answered
        self.next_index = self.follower.offset + 1
        self.ctl.activate()
        self.contact.clear()

    @rule(broker=BROKERS, rack=st.sampled_from(["", "x", "y"]))
    def register(self, broker: int, rack: str) -> None:
        self.incarnations += 1
        inc = f"inc-{self.incarnations}"
        self.propose(lambda: self.ctl.register_broker(broker, inc, "h", 9000 + broker, rack, now_ms=self.now))
        self.contact[broker] = self.now
        b = self.ctl.image.brokers[broker]
        assert b.fenced and b.incarnation_id == inc and b.epoch == self.next_index - 1

    @rule(broker=BROKERS, stale=st.booleans(), lagging=st.booleans())
    def heartbeat(self, broker: int, stale: bool, lagging: bool) -> None:
        b = self.ctl.image.broker(broker)
        if b is None:
            self.refused(ErrorCode.BROKER_ID_NOT_REGISTERED, lambda: self.ctl.broker_heartbeat(broker, 1, 0, now_ms=0))
            return
        if stale:
            self.refused(
                ErrorCode.STALE_BROKER_EPOCH,
                lambda: self.ctl.broker_heartbeat(broker, b.epoch - 1, b.epoch, now_ms=self.now),
            )
            return
        offset = b.epoch - 1 if lagging else self.ctl.image.offset
        response = self.propose(lambda: self.ctl.broker_heartbeat(broker, b.epoch, offset, now_ms=self.now))
        assert response.should_shut_down == b.shut_down
        if not b.shut_down:
            self.contact[broker] = self.now
        assert self.ctl.image.is_usable(broker) == (not b.shut_down and (b.usable or not lagging))
        assert response.fenced == (not self.ctl.image.is_usable(broker))

    @rule()
    def heartbeat_all(self) -> None:
        for broker, b in sorted(self.ctl.image.brokers.items()):
            if not b.shut_down:
                self.heartbeat(broker, stale=False, lagging=False)

    @rule(advance=st.integers(0, 6000))
    def tick(self, advance: int) -> None:
        self.now += advance
        usable = self.ctl.image.usable_broker_ids
        expected = tuple(b for b in usable if self.now - self.contact.setdefault(b, self.now) > TIMEOUT)
        response = self.propose(lambda: self.ctl.tick(self.now))
        assert response.fenced == expected
        for b in expected:
            del self.contact[b]
            assert not self.ctl.image.is_usable(b)
            assert self.ctl.image.leaders_per_broker.get(b, 0) == 0

    @rule(broker=BROKERS, stale=st.booleans())
    def shutdown(self, broker: int, stale: bool) -> None:
        b = self.ctl.image.broker(broker)
        if b is None:
            return
        if stale:
            self.refused(ErrorCode.STALE_BROKER_EPOCH, lambda: self.ctl.shutdown_broker(broker, b.epoch - 1))
            return
        self.propose(lambda: self.ctl.shutdown_broker(broker, b.epoch))
        self.contact.pop(broker, None)
        after = self.ctl.image.brokers[broker]
        assert after.fenced and after.shut_down and self.ctl.image.leaders_per_broker.get(broker, 0) == 0

    @rule(
        name=NAMES,
        partitions=st.integers(0, 7),
        rf=st.integers(1, 4),
        start=st.integers(0, 20),
        unclean=st.booleans(),
    )
    def create_topic(self, name: str, partitions: int, rf: int, start: int, unclean: bool) -> None:
        image = self.ctl.image
        self.topic_ids += 1
        tid = f"T{self.topic_ids}"
        configs = {"unclean.leader.election.enable": "true"} if unclean else {}

        def command() -> ControllerResult[CreateTopicResponse]:
            return self.ctl.create_topic(name, partitions, rf, configs, topic_id=tid, start_index=start)

        if image.topic(name) is not None:
            self.refused(ErrorCode.TOPIC_ALREADY_EXISTS, command)
        elif partitions < 1:
            self.refused(ErrorCode.INVALID_PARTITIONS, command)
        elif rf > len(image.usable_broker_ids):
            self.refused(ErrorCode.INVALID_REPLICATION_FACTOR, command)
        else:
            self.propose(command)
            t = self.ctl.image.topics[tid]
            leaders = Counter(p.leader for p in t.partitions.values())
            counts = [leaders.get(b, 0) for b in image.usable_broker_ids]
            assert max(counts) - min(counts) <= 1, f"unbalanced leaders {counts}"
            racks = {image.brokers[b].rack for b in image.usable_broker_ids}
            for p in t.partitions.values():
                assert len(set(p.replicas)) == rf and all(image.is_usable(r) for r in p.replicas)
                assert len({image.brokers[r].rack for r in p.replicas}) == min(rf, len(racks))

    @rule(name=NAMES, more=st.integers(-2, 6))
    def create_partitions(self, name: str, more: int) -> None:
        image = self.ctl.image
        t = image.topic(name)
        current = len(t.partitions) if t is not None else 0
        rf = len(target_replicas(t.partitions[0])) if t is not None else 0  # a moving partition: its target

        def command() -> ControllerResult[CreatePartitionsResponse]:
            return self.ctl.create_partitions(name, current + more)

        if t is None:
            self.refused(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, command)
        elif more < 1:
            self.refused(ErrorCode.INVALID_PARTITIONS, command)
        elif rf > len(image.usable_broker_ids):
            self.refused(ErrorCode.INVALID_REPLICATION_FACTOR, command)
        else:
            response = self.propose(command)
            after = self.ctl.image.topics[t.topic_id]
            assert sorted(after.partitions) == list(range(current + more))
            assert {i: after.partitions[i] for i in t.partitions} == dict(t.partitions)
            assert dict(response.partitions) == {i: after.partitions[i] for i in range(current, current + more)}
            leaders = Counter(p.leader for p in response.partitions.values())
            counts = [leaders.get(b, 0) for b in image.usable_broker_ids]
            assert max(counts) - min(counts) <= 1, f"unbalanced new leaders {counts}"
            for p in response.partitions.values():
                assert len(set(p.replicas)) == rf and all(image.is_usable(r) for r in p.replicas)
                assert p.isr == p.replicas and p.leader == p.replicas[0]

    @rule(name=NAMES)
    def delete_topic(self, name: str) -> None:
        if self.ctl.image.topic(name) is None:
            self.refused(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, lambda: self.ctl.delete_topic(name))
        else:
            self.propose(lambda: self.ctl.delete_topic(name))
            assert self.ctl.image.topic(name) is None

    @precondition(lambda self: self.ctl.image.partition_count > 0)
    @rule(
        pick=st.integers(0, 100),
        kind=st.sampled_from(["shrink", "expand", "leader_epoch", "partition_epoch", "not_leader"]),
        sender_pick=st.integers(0, 2),
    )
    def alter_partition(self, pick: int, kind: str, sender_pick: int) -> None:
        image = self.ctl.image
        parts = list(image.all_partitions())
        t, index, p = parts[pick % len(parts)]
        sender = p.leader
        new_isr = list(p.isr)
        leader_epoch, partition_epoch = p.leader_epoch, p.partition_epoch
        expect = ErrorCode.NONE
        if p.offline or kind == "not_leader":
            others = [r for r in p.replicas if r != p.leader]
            if not others:
                return
            sender = others[sender_pick % len(others)]
            expect = ErrorCode.NOT_LEADER_OR_FOLLOWER
        elif kind == "shrink":
            followers = [r for r in p.isr if r != p.leader]
            new_isr = [r for r in p.isr if not followers or r != followers[-1]]
            if len(new_isr) < min(t.min_isr(p, image.min_isr_default(1)), len(p.isr)):
                expect = ErrorCode.INVALID_REQUEST  # below the floor an altered min.insync.replicas sets
        elif kind == "expand":
            outside = [r for r in p.replicas if r not in p.isr]
            if outside:
                new_isr.append(outside[sender_pick % len(outside)])
                expect = ErrorCode.NONE if image.is_usable(new_isr[-1]) else ErrorCode.INELIGIBLE_REPLICA
        elif kind == "leader_epoch":
            leader_epoch += -1 if leader_epoch else 1
            expect = ErrorCode.FENCED_LEADER_EPOCH
        else:
            partition_epoch += -1 if partition_epoch else 1
            expect = ErrorCode.INVALID_UPDATE_VERSION
        b = image.brokers[sender]

        def command() -> ControllerResult[AlterPartitionResponse]:
            return self.ctl.alter_partition(
                sender,
                b.epoch,
                t.topic_id,
                index,
                leader_epoch=leader_epoch,
                partition_epoch=partition_epoch,
                new_isr=new_isr,
            )

        if expect != ErrorCode.NONE:
            self.refused(expect, command)
            return
        self.propose(command)
        now = self.ctl.image.partition(t.topic_id, index)
        assert now is not None
        if p.reassigning and not now.reassigning:  # the new ISR completed a move (reassignment.py)
            assert now.replicas == target_replicas(p) and set(now.isr) == set(now.replicas) <= set(new_isr)
        else:
            assert list(now.isr) == new_isr and now.leader == p.leader

    @precondition(lambda self: self.ctl.image.partition_count > 0)
    @rule(pick=st.integers(0, 100), to=st.none() | st.lists(BROKERS, min_size=1, max_size=4, unique=True) | TARGETS)
    def reassign(self, pick: int, to: list[int] | None) -> None:
        """Start, replace or cancel a move; a refusal changes nothing, a start or cancel lands on its target."""
        parts = list(self.ctl.image.all_partitions())
        t, index, p = parts[pick % len(parts)]
        response = self.propose(lambda: self.ctl.alter_partition_reassignments([(t.name, index, to)]))
        (result,) = response.results
        now = self.ctl.image.partition(t.topic_id, index)
        assert now is not None
        if result.error != ErrorCode.NONE:
            assert now == p, result
        elif to is None:
            assert now.replicas == original_replicas(p) and not now.reassigning
        else:
            assert target_replicas(now) == tuple(to)
            assert set(now.adding) == set(to) - set(original_replicas(p))

    @rule(one=st.booleans(), name=NAMES, index=st.integers(0, 7))
    def preferred_election(self, one: bool, name: str, index: int) -> None:
        response = self.propose(lambda: self.ctl.elect_preferred_leaders([(name, index)] if one else None))
        for (topic, i), code in response.results.items():
            if code == ErrorCode.NONE:
                p = self.ctl.image.topics_by_name[topic].partitions[i]
                assert p.leader == p.replicas[0]

    @rule(broker=BROKERS, stale=st.booleans())
    def allocate_producer_ids(self, broker: int, stale: bool) -> None:
        b = self.ctl.image.broker(broker)
        if b is None:
            self.refused(ErrorCode.BROKER_ID_NOT_REGISTERED, lambda: self.ctl.allocate_producer_ids(broker, 1))
            return
        if stale:
            self.refused(ErrorCode.STALE_BROKER_EPOCH, lambda: self.ctl.allocate_producer_ids(broker, b.epoch - 1))
            return
        before = self.ctl.image.next_producer_id
        block = self.propose(lambda: self.ctl.allocate_producer_ids(broker, b.epoch))
        assert block.first == before and block.size > 0 and block.broker_id == broker
        assert self.ctl.image.next_producer_id == block.next_block_first
        self.blocks_pending.append((self.next_index - 1, range(block.first, block.next_block_first)))

    @rule(
        resource_name=st.sampled_from(["a", "b", "c", CLUSTER_WIDE]),
        key=st.sampled_from(["unclean.leader.election.enable", "min.insync.replicas", "retention.ms"]),
        choice=st.integers(0, 4),
        validate_only=st.booleans(),
    )
    def alter_configs(self, resource_name: str, key: str, choice: int, validate_only: bool) -> None:
        value = {
            "unclean.leader.election.enable": [None, "true", "false", "true", "bad"],
            "min.insync.replicas": [None, "1", "2", "3", "bad"],
            "retention.ms": [None, "60000", "-1", "5", "bad"],
        }[key][choice]

        def configs() -> dict[str, str] | None:
            if resource_name == CLUSTER_WIDE:
                return dict(self.ctl.image.broker_configs.get(resource_name, {}))
            t = self.ctl.image.topic(resource_name)
            return None if t is None else dict(t.configs)

        wide = resource_name == CLUSTER_WIDE
        name = BROKER_KEY_OF[key] if wide else key
        resource = ConfigResource(BROKER_RESOURCE if wide else TOPIC_RESOURCE, resource_name)
        before = configs()
        change = AlterConfigsResource(resource, (ConfigChange(name, value),))
        (result,) = self.propose(lambda: self.ctl.incremental_alter_configs([change], validate_only)).results
        after = configs()
        if before is None:
            assert result.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            return
        assert after is not None
        valid = value != "bad"
        assert (result.error_code == ErrorCode.NONE) == valid, result
        if valid and not validate_only:
            assert after.get(name) == value
        else:
            assert after == before

    # -- invariants --

    @invariant()
    def producer_id_blocks_never_overlap(self) -> None:
        ordered = sorted(self.blocks, key=lambda r: r.start)
        for a, b in itertools.pairwise(ordered):
            assert a.stop <= b.start, f"producer id blocks {a} and {b} overlap"
        if ordered:
            assert ordered[-1].stop <= self.follower.next_producer_id

    @invariant()
    def images_hold_the_invariants(self) -> None:
        check_invariants(self.ctl.image)
        check_invariants(self.ctl.committed_image)
        image = self.ctl.image
        assert image_from_records(image.offset, image_to_records(image)) == image

    def teardown(self) -> None:
        if hasattr(self, "ctl"):
            check_snapshot(self.ctl.image)  # records and bytes, both ways

    @invariant()
    def followers_agree_with_the_controller(self) -> None:
        assert self.follower == self.ctl.committed_image
        for b, view in self.views.items():
            expect = {TopicIdPartition(t.topic_id, i): p for t, i, p in self.follower.partitions_of_broker(b)}
            assert view == expect, f"broker {b}'s local view differs"

    @invariant()
    def committed_epochs_never_decrease(self) -> None:
        for t, i, p in self.follower.all_partitions():
            tp = TopicIdPartition(t.topic_id, i)
            le, pe = self.epochs.get(tp, (0, 0))
            assert p.leader_epoch >= le and p.partition_epoch >= pe
            self.epochs[tp] = (p.leader_epoch, p.partition_epoch)


MetadataMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_metadata_state_machine = MetadataMachine.TestCase
