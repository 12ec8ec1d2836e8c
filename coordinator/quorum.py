"""QuorumController: the metadata ``Controller`` driven by Raft (controller.py's contract).

One per controller node. It is the Raft driver's state machine (``apply``,
``restore``, ``snapshot``, ``on_soft_state``) and the entry point for
commands from the controller gRPC service.

Rules:
- Activation: when this node becomes Raft leader, the index of the new
  term's no-op entry is noted; once that entry is applied, every record any
  earlier controller committed is in the image, and ``Controller.activate()``
  runs. Until then commands fail with NOT_CONTROLLER (and the leader hint).
- Commands run one at a time under a lock: decide (pure), propose the records
  as ONE Raft entry, replay them at once as uncommitted (so the next command
  sees them), then — outside the lock — wait until the entry is applied and
  answer with the response and the entry's index (the metadata offset).
  A command with no records answers once everything proposed before it is
  applied, because its response may describe uncommitted state.
- Own entries: ``apply`` of an entry this controller proposed in its current
  term confirms it (``Controller.commit``) instead of replaying it twice. Any
  other entry, or any entry after leadership was lost (``resign``), is
  replayed as committed; another entry while own ones are pending means ours
  was replaced, and the controller resigns — except an entry without records
  before the oldest pending proposal: that is Raft's own (a CONF entry the Raft
  leader adds on its own, coordinator/raft/membership.py), with nothing to replay.
- Soft state is handled before the committed entries of the same Ready (the
  Raft driver's order), so a deposed leader resigns before it applies the
  new leader's entries.
- Followers of the metadata log (brokers) that connect behind the applied
  offset get the committed image as one snapshot, then the committed entries
  after it as they are applied — never old entries one by one (see ``follow``).
- Session ticks: every ``tick_interval_s`` the active controller runs
  ``Controller.tick(now_ms)`` with monotonic time, fencing expired brokers.
- Liveness probes (with a ``probe``): on each tick, every unfenced broker
  silent for ``broker_liveness_probe_ms`` (``Controller.silent_brokers``) is
  probed at its registered listener, one probe per broker at a time; when the
  probe says the connection was refused, ``Controller.fence_unreachable``
  fences it without waiting for the session (the rule and why it is safe:
  coordinator/metadata/brokers.py). ``probe(host, port)`` is the node's
  (node/liveness_probe.py): True only for a refused connection, never for a
  timeout.
- Reported brokers (``probe_reported``): a broker whose fetch from its leader
  failed names the leader in its next heartbeat, which it sends at once
  (node/lifecycle.py). The active controller probes each named broker without
  waiting for ``broker_liveness_probe_ms`` of silence, and fences it only if
  the probe is refused and nothing was heard from that broker since the probe
  began: the evidence is the same refused connection, so a kill -9 of a
  leader costs one probe, not the silence, before its partitions move.
- Preferred leaders: every ``preferred_election_interval_s`` (Kafka's
  leader.imbalance.check.interval.seconds; <= 0 disables) the active
  controller moves leadership back to each partition's first replica where
  it is alive and in the ISR, so leaders spread out again after failures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from coordinator.metadata import Controller, ControllerConfig, ControllerResult, MetadataImage, TickResponse
from coordinator.metadata.records import MetadataRecord, decode_batch, encode_batch
from coordinator.metadata.snapshot import decode_snapshot, encode_snapshot
from coordinator.raft import Entry, EntryKind, NotLeader, Role, Snapshot, SoftState, Status
from ketch.errors import ErrorCode, KetchError

log = logging.getLogger("ketch.controller")
R = TypeVar("R")


class NotController(KetchError):
    code = ErrorCode.NOT_CONTROLLER

    def __init__(self, leader_id: int) -> None:
        hint = f"the active controller is node {leader_id}" if leader_id > 0 else "no active controller yet"
        super().__init__(f"this node is not the active controller; {hint}")
        self.leader_id = leader_id


class RaftHandle(Protocol):
    """What the quorum controller needs of coordinator.raft_driver.RaftDriver."""

    @property
    def leader_id(self) -> int: ...

    @property
    def term(self) -> int: ...

    def propose_nowait(self, data: bytes) -> int: ...

    async def wait_applied(self, index: int, timeout_s: float) -> None: ...

    def last_index(self) -> int: ...

    def status(self) -> Status: ...


@dataclass(frozen=True)
class RetainedEntry:
    offset: int
    records: tuple[MetadataRecord, ...]


class QuorumController:
    def __init__(
        self,
        node_id: int,
        config: ControllerConfig | None = None,
        *,
        command_timeout_s: float = 15.0,
        tick_interval_s: float = 0.05,
        preferred_election_interval_s: float = 300.0,
        retain_entries: int = 10_000,
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
        probe: Callable[[str, int], Awaitable[bool]] | None = None,
    ) -> None:
        self._probe = probe
        self._probing: dict[int, asyncio.Task[None]] = {}
        self.node_id = node_id
        self.controller = Controller(config)
        self.raft: RaftHandle | None = None
        self._clock_ms = clock_ms
        self._command_timeout_s = command_timeout_s
        self._tick_interval_s = tick_interval_s
        self._preferred_interval_s = preferred_election_interval_s
        self._lock = asyncio.Lock()
        self._active = False
        self._activation_index: int | None = None
        self._term = 0
        self._own: deque[tuple[int, int]] = deque()  # (index, term) proposed by us, not yet applied
        self._confirmed: set[int] = set()  # own indexes applied as ours, until their command returns
        self._last_proposed = 0
        self._retained: deque[RetainedEntry] = deque(maxlen=retain_entries)
        self._applied_event = asyncio.Event()
        self._applied_offset = 0
        self._closed = False
        self.leader_changes = 0

    # -- Raft state machine ---------------------------------------------------

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        was_leader = self._activation_index is not None or self._active
        if soft.role == Role.LEADER and not was_leader:
            assert self.raft is not None
            self._term = term
            self._activation_index = self.raft.last_index()
            log.info(
                "node %d leads the quorum in term %d; active after index %d", self.node_id, term, self._activation_index
            )
        elif soft.role != Role.LEADER and was_leader:
            log.info("node %d no longer leads the quorum (term %d)", self.node_id, term)
            self._resign()
        self.leader_changes += 1

    def _resign(self) -> None:
        self._active = False
        self._activation_index = None
        self._own.clear()
        self.controller.resign()

    def apply(self, entry: Entry) -> None:
        records = [] if entry.kind == EntryKind.NOOP or not entry.data else decode_batch(entry.data)
        if self._own and self._own[0] == (entry.index, entry.term):
            self._own.popleft()
            self._confirmed.add(entry.index)
            self.controller.commit(entry.index)
        elif self._own and entry.index < self._own[0][0] and not records:
            pass  # Raft's own entry (a CONF) before our pending proposals: no metadata to replay
        else:
            if self._own:  # an entry we proposed was replaced: our pending view is void
                self._resign()
            self.controller.replay_batch(entry.index, records)
        self._retained.append(RetainedEntry(entry.index, tuple(records)))
        self._applied_offset = entry.index
        if self._activation_index is not None and not self._active and entry.index >= self._activation_index:
            self._active = True
            self.controller.activate()
            log.info("node %d is the active controller at offset %d", self.node_id, entry.index)
        self._notify()

    def restore(self, snapshot: Snapshot) -> None:
        self._own.clear()
        self.controller.reset(decode_snapshot(snapshot.data))
        self._retained.clear()
        self._applied_offset = snapshot.index
        self._notify()

    def snapshot(self) -> tuple[int, bytes]:
        image = self.controller.committed_image
        return image.offset, encode_snapshot(image)

    def _notify(self) -> None:
        event, self._applied_event = self._applied_event, asyncio.Event()
        event.set()

    # -- commands -------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active

    @property
    def image(self) -> MetadataImage:
        return self.controller.committed_image

    def now_ms(self) -> int:
        return self._clock_ms()

    def raft_status(self) -> Status:
        assert self.raft is not None
        return self.raft.status()

    def leader_hint(self) -> int:
        return self.raft.leader_id if self.raft is not None else -1

    async def run(self, command: Callable[[Controller], ControllerResult[R]]) -> tuple[R, int]:
        """Run one command; returns its response and the offset holding its records."""
        assert self.raft is not None, "raft driver not attached"
        async with self._lock:
            if not self._active:
                raise NotController(self.leader_hint())
            result = command(self.controller)
            if result.records:
                try:
                    index = self.raft.propose_nowait(encode_batch(result.records))
                except NotLeader as exc:
                    raise NotController(exc.leader if hasattr(exc, "leader") else -1) from None
                self.controller.replay_batch(index, result.records, committed=False)
                self._own.append((index, self._term))
                self._last_proposed = index
            else:
                index = max(self._last_proposed, self._applied_offset)
        try:
            await self.raft.wait_applied(index, self._command_timeout_s)
        except NotLeader:  # the Raft driver stopped, or leadership moved while waiting
            self._confirmed.discard(index)
            raise NotController(self.leader_hint()) from None
        except TimeoutError:
            self._confirmed.discard(index)
            raise KetchError(
                f"the controller did not commit offset {index} within {self._command_timeout_s}s",
                code=ErrorCode.REQUEST_TIMED_OUT,
            ) from None
        if result.records:
            if index not in self._confirmed:  # another leader's entry took the index
                raise NotController(self.leader_hint())
            self._confirmed.discard(index)
        return result.response, index

    async def tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_preferred = loop.time() + self._preferred_interval_s
        while True:
            await asyncio.sleep(self._tick_interval_s)
            if not self._active:
                continue
            if self._preferred_interval_s > 0 and loop.time() >= next_preferred:
                next_preferred = loop.time() + self._preferred_interval_s
                try:
                    elected, _ = await self.run(lambda c: c.elect_preferred_leaders())
                    moved = [tp for tp, code in elected.results.items() if code == ErrorCode.NONE]
                    if moved:
                        log.info("preferred leader election moved %d partition(s): %s", len(moved), moved)
                except Exception as exc:
                    log.debug("preferred election not applied: %s", exc)
            try:
                response, _ = await self.run(lambda c: c.tick(self._clock_ms()))
                if response.fenced:
                    log.warning("fenced brokers %s: session expired", list(response.fenced))
                for topic_id, partition, leader in response.recovered:
                    log.warning(
                        "unclean recovery of %s-%d: broker %d has the best log and leads", topic_id, partition, leader
                    )
            except KetchError as exc:
                log.debug("tick not applied: %s", exc)
            except Exception:
                log.exception("controller tick failed")
            if self._probe is not None and self._active:
                for broker_id, epoch, host, port in self.controller.silent_brokers(self._clock_ms()):
                    self._start_probe(broker_id, epoch, host, port, None)

    def probe_reported(self, broker_ids: Iterable[int]) -> None:
        """Probe at once the brokers a heartbeat named unreachable (see the module docstring)."""
        if self._probe is None or not self._active:
            return
        for broker_id, epoch, host, port in self.controller.probe_targets(broker_ids):
            self._start_probe(broker_id, epoch, host, port, self._clock_ms())

    def _start_probe(self, broker_id: int, epoch: int, host: str, port: int, since_ms: int | None) -> None:
        if broker_id not in self._probing:
            self._probing[broker_id] = asyncio.create_task(
                self._probe_broker(broker_id, epoch, host, port, since_ms), name=f"probe-broker-{broker_id}"
            )

    async def _probe_broker(self, broker_id: int, epoch: int, host: str, port: int, since_ms: int | None) -> None:
        """Probe one broker; fence it if the connection was refused and it stayed silent: for the
        configured time, or (``since_ms``, a reported broker) since the probe began."""
        assert self._probe is not None

        def fence(c: Controller) -> ControllerResult[TickResponse]:
            now = self._clock_ms()
            return c.fence_unreachable(broker_id, epoch, now, None if since_ms is None else now - since_ms)

        try:
            if not await self._probe(host, port):
                return
            response, _ = await self.run(fence)
            if response.fenced:
                why = "no heartbeat" if since_ms is None else "reported unreachable, no heartbeat since"
                log.warning("fenced broker %d: %s, and %s:%d refused a connection", broker_id, why, host, port)
        except KetchError as exc:
            log.debug("fencing unreachable broker %d not applied: %s", broker_id, exc)
        except Exception:
            log.exception("probing broker %d failed", broker_id)
        finally:
            self._probing.pop(broker_id, None)

    # -- the committed metadata log, for brokers ------------------------------

    def close(self) -> None:
        """End every ``follow`` stream (node shutdown: streams must not hold the server open)."""
        self._closed = True
        for task in self._probing.values():
            task.cancel()
        self._notify()

    async def follow(self, from_offset: int) -> AsyncIterator[tuple[str, Any]]:
        """Yield ("snapshot", image) first when the caller is behind, then ("entry", RetainedEntry)
        for every committed entry after it, until ``close``.

        A caller that is behind at all gets the committed image as one snapshot,
        never the history entry by entry: a broker replaying old entries one at a
        time would pass through roles it no longer has (leader of an old epoch)
        and act on them while catching up.
        """
        offset = from_offset
        if offset < self._applied_offset:
            image = self.controller.committed_image
            yield "snapshot", image
            offset = image.offset
        while not self._closed:
            first = self._retained[0].offset if self._retained else self._applied_offset + 1
            if offset < first - 1:
                image = self.controller.committed_image
                yield "snapshot", image
                offset = image.offset
            pending = [e for e in self._retained if e.offset > offset]
            for entry in pending:
                yield "entry", entry
                offset = entry.offset
            if not pending and self._applied_offset <= offset:
                await self._applied_event.wait()
