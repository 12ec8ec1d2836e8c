"""Shared helpers for the metadata tests (no tests here): a tiny in-memory driver and invariant checks.

``Cluster`` plays the coordinator driver's part from controller.py's
contract: each command's records become one "Raft entry" at the next index,
replayed at once; ``now`` is the simulated monotonic clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from coordinator.metadata import (
    NO_LEADER,
    Controller,
    ControllerConfig,
    ControllerResult,
    MetadataImage,
    MetadataRecord,
    TopicIdPartition,
    decode_snapshot,
    encode_snapshot,
    image_from_records,
    image_to_records,
)

R = TypeVar("R")


class Cluster:
    def __init__(self, session_timeout_ms: int = 9000, min_isr: int = 1) -> None:
        config = ControllerConfig(broker_session_timeout_ms=session_timeout_ms, min_insync_replicas=min_isr)
        self.ctl = Controller(config)
        self.offset = 0
        self.now = 0
        self.batches: list[tuple[int, list[MetadataRecord]]] = []
        self._incarnations = 0

    @property
    def image(self) -> MetadataImage:
        return self.ctl.image

    def run(self, result: ControllerResult[R]) -> R:
        """Commit and replay the result's records as one entry; return the response."""
        if result.records:
            self.offset += 1
            self.ctl.replay_batch(self.offset, result.records)
            self.batches.append((self.offset, list(result.records)))
        return result.response

    def epoch(self, broker_id: int) -> int:
        b = self.image.broker(broker_id)
        assert b is not None
        return b.epoch

    def register(
        self,
        broker_id: int,
        rack: str = "",
        *,
        clean: bool = True,
        logs: dict[TopicIdPartition, tuple[int, int]] | None = None,
    ) -> int:
        self._incarnations += 1
        args = (broker_id, f"inc-{self._incarnations}", "h", 9000 + broker_id, rack)
        self.run(self.ctl.register_broker(*args, now_ms=self.now, clean_shutdown=clean, replica_logs=logs))
        return self.epoch(broker_id)

    def heartbeat(self, broker_id: int, logs: dict[TopicIdPartition, tuple[int, int]] | None = None) -> None:
        epoch = self.epoch(broker_id)
        self.run(self.ctl.broker_heartbeat(broker_id, epoch, self.offset, now_ms=self.now, replica_logs=logs))

    def add_brokers(self, ids: Iterable[int], racks: dict[int, str] | None = None) -> None:
        ids = list(ids)
        for b in ids:
            self.register(b, (racks or {}).get(b, ""))
        for b in ids:
            self.heartbeat(b)

    def heartbeat_all(self, except_: Iterable[int] = ()) -> None:
        skip = set(except_)
        for b, reg in sorted(self.image.brokers.items()):
            if b not in skip and not reg.shut_down:
                self.heartbeat(b)

    def advance(self, ms: int, alive: Iterable[int] | None = None) -> tuple[int, ...]:
        """Move the clock; brokers in ``alive`` heartbeat first; then tick. Returns the fenced ids."""
        self.now += ms
        if alive is not None:
            for b in alive:
                self.heartbeat(b)
        return self.run(self.ctl.tick(self.now)).fenced

    def create(self, name: str, partitions: int, rf: int, configs: dict[str, str] | None = None, start: int = 0) -> str:
        topic_id = f"id-{name}-{self.offset}"
        self.run(self.ctl.create_topic(name, partitions, rf, configs, topic_id=topic_id, start_index=start))
        return topic_id


def check_invariants(image: MetadataImage, min_isr: int = 1) -> None:
    """The partition and broker invariants every image must hold, plus one of
    liveness: a partition is offline only while no eligible replica is unfenced
    (or while it is in unclean recovery)."""
    for t, index, p in image.all_partitions():
        where = f"{t.name}-{index}"
        problem = p.check()
        assert problem is None, f"{where}: {problem}"
        assert all(r in image.brokers for r in p.replicas), f"{where}: unknown replica in {p.replicas}"
        if p.leader != NO_LEADER:
            assert image.is_usable(p.leader), f"{where}: leader {p.leader} is fenced"
            floor = t.min_isr(p, image.min_isr_default(min_isr))
            assert len(p.isr) <= floor or all(image.is_usable(r) for r in p.isr), (
                f"{where}: fenced broker in the ISR {p.isr} of a live partition, above the floor"
            )
        elif not p.recovering:  # offline only while nobody may lead it
            eligible = p.replicas if image.unclean_leader_election(t) else p.isr
            assert not any(image.is_usable(r) for r in eligible), f"{where}: offline with {eligible} eligible"
    for b in image.brokers.values():
        assert b.epoch <= image.offset
        assert not (b.shut_down and not b.fenced)


def check_snapshot(image: MetadataImage) -> None:
    assert image_from_records(image.offset, image_to_records(image)) == image
    data = encode_snapshot(image)
    assert decode_snapshot(data) == image
    assert encode_snapshot(decode_snapshot(data)) == data
