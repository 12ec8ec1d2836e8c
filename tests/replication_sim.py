"""Deterministic simulation of one partition (3 replicas on 3 brokers) plus a controller.

One seed fixes everything: drop rate and delays, how often appends are fsynced,
the fault schedule, every scheduler choice. A discrete-event simulation on a
millisecond clock drives the *real* pure code the way the asyncio drivers do;
every replica rule it exercises is the one the node runs, called, not copied:

- Controller: ``coordinator.metadata.Controller`` as a perfectly reliable quorum,
  with ``min.insync.replicas`` = ``MIN_ISR`` (the ISR floor, KIP-966).
  A command's records are replayed (committed) at once and the new image pushed
  to the brokers over the network — again every controller tick to brokers that
  are behind (the FetchMetadata stream). A broker applies an image only if it is
  newer than its own, acting on ``local_changes`` as node/broker.py does; a
  restarted broker starts from the empty image.
- ``SimBroker`` is the node's drivers in small, around the same calls:
  node/lifecycle.py (register — unclean after every start, since every restart
  here follows a kill, with its log end; heartbeat, reporting its log end
  while the partition is in unclean recovery; register again on
  STALE_BROKER_EPOCH); node/broker.py (act on an image only if
  ``caught_up_to_registration``, then ``become_leader``/``become_follower``);
  node/isr_manager.py (``LeaderState.propose_isr_change`` and
  ``isr_broker_epochs``, one AlterPartition at a time; refused *or
  unanswered* → ``on_isr_rejected``); node/replica_fetcher.py (fetch offset =
  log end, last fetched epoch; ``Partition.apply_fetch_answer``; an fsync
  after an append with the seed's probability, as the group commit does for
  ``flush.messages=1``); node/service.py (Produce: ``Partition.append``, then
  for acks=all ``acks_all_outcome`` whenever the partition moves and at the
  deadline; Fetch: ``check_epoch``, ``Partition.serve_follower_fetch``,
  long-polling, and leaving out an answer that would change nothing on the
  follower, by ``changes_nothing`` and the high watermark the follower
  sends). With ``SimParams.sessions`` the follower keeps a fetch session
  (node/fetch_session.py: the real ``FollowerSession`` and ``FetchSessions``,
  and the fetch purgatory's ``Watch``): a fetch names the partition only when
  its fetch state changed, and the leader counts an unnamed partition as
  fetched again at what it last named (``Partition.on_follower_fetch``, as
  node/fetch_service.py does) and reads it only when it was notified since,
  or answered or behind last time; such a fetch parks on the session's watch
  and reads once that is notified, or answers nothing at its deadline.
  The replicas are ``Sim.partition_class`` (``Partition``), so
  tests/test_replication_sim.py puts old bugs back by subclassing the real
  ``Partition`` and ``LeaderState``, to show the checker catches them; only
  the driver's own part of two old bugs lives in its ``SimBroker`` subclass.
- The producer is idempotent (KIP-98; ``SimParams.idempotent``): one producer id,
  per-batch sequences, up to ``MAX_IN_FLIGHT`` unacknowledged batches; a batch
  answered with an error or not at all is retried with the same epoch and
  sequence until acknowledged; requests travel in order over one connection
  (``Connection``), and a retry or a new leader waits until nothing is in
  flight. On OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID for its
  oldest unacknowledged batch it bumps its epoch locally and restarts its
  sequences at 0 (KIP-360) — once every unacknowledged batch got that answer,
  so none of them can be stored under the old epoch. Without idempotence the
  batches carry no producer id and a retry resends the same records.
- Logs are ``MemoryPartitionLog``; an append is fsynced with a per-seed
  probability (0..1), so ``crash()`` (power loss) drops a random unsynced tail.
- Network: messages are dropped or delayed (so reordered); links are cut (a
  broker from its peers, from the controller, or both). A paused broker holds
  every message and timer until it resumes; a killed one loses them.
- Faults: ``kill`` (with power loss: ``crash()``; without: page cache kept),
  ``restart`` (a new process: new registration, empty image), ``paused``/
  ``resume``, links in ``cut``. The scenario that schedules them, the producer
  workload, the liveness phase and the checker of the invariants are in
  tests/test_replication_sim.py, which subclasses ``Sim`` (hooks: ``started()``
  once the topic exists, ``checked()`` after every event, ``killing()``).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from coordinator.metadata import (
    Controller,
    ControllerConfig,
    MetadataImage,
    MetadataRecord,
    TopicIdPartition,
    local_changes,
)
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from ketch.recordbatch import parse_header
from node.fetch_session import FetchSession, FetchSessions, FollowerSession
from node.fetch_waiters import FetchWaiters
from replication.acks import acks_all_outcome
from replication.follower import FetchAnswer, changes_nothing
from replication.memory_log import MemoryPartitionLog
from replication.partition import Partition, caught_up_to_registration
from tests.batches import make_batch

TOPIC, TOPIC_ID, BROKERS, MIN_ISR = "sim", "sim-topic", (1, 2, 3), 2
KEY = (TOPIC, 0)  # the partition's key in the fetch purgatory and in a fetch session
HEARTBEAT_MS, SESSION_MS, LAG_MS, ISR_CHECK_MS, CONTROLLER_TICK_MS = 100, 600, 1000, 100, 100
FETCH_WAIT_MS, RPC_TIMEOUT_MS, PRODUCE_TIMEOUT_MS = 200, 600, 1500
PRODUCER_ID, MAX_IN_FLIGHT, RETRY_BACKOFF_MS = 4242, 4, 50
BUMP_EPOCH = (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID)
Endpoint = int | str  # a broker id, "c" (the controller) or "p" (the producer)
Fn = Callable[[], None]
Reply = Callable[[Any], None]
Waiter = tuple[Partition, int, int, int, Reply]  # partition, leader epoch, last offset, base offset, reply
LogReport = dict[TopicIdPartition, tuple[int, int]]  # (latest epoch, log end) per local replica


def _state(request: FetchRequest) -> tuple[int, int, int, int]:
    """A follower's fetch state of the partition, as node/replica_fetcher.py gives it to ``FollowerSession``."""
    return request.fetch_offset, request.current_leader_epoch, request.last_fetched_epoch, request.high_watermark


class SimFailure(AssertionError):
    """An invariant broke; the message names the seed and how to replay it."""


@dataclass(frozen=True)
class SimParams:
    seed: int
    acks: int = -1  # -1 (all): the real run; 1: the control run, which must be caught losing data
    idempotent: bool = True  # False: the control run whose retries must be caught duplicating
    sessions: bool = False  # followers fetch in sessions (node/fetch_session.py)


@dataclass
class PendingBatch:
    """One batch of the simulated producer until it is acknowledged: retried with the SAME epoch and
    sequence until then (``attempt`` names the current one; an answer to an older one only counts
    if it is a success)."""

    tag: str
    count: int
    acks: int
    on_done: Callable[[list[int]], None]
    epoch: int = -1
    seq: int = -1
    attempt: int = 0
    in_flight: bool = False
    refused: bool = False  # answered OUT_OF_ORDER_SEQUENCE_NUMBER (or UNKNOWN_PRODUCER_ID) since last sent


@dataclass
class Connection:
    """The producer's connection to one broker process: like TCP (and gRPC calls on one HTTP/2
    connection), requests arrive in the order sent and replies in the order answered; once one is
    lost the connection is broken and everything after it is lost too, until the producer connects
    again (``send_pending`` does, once nothing is in flight)."""

    broker: int
    incarnation: int
    broken: bool = False
    last_reply_at: int = 0


@dataclass(frozen=True)
class FetchRequest:
    replica_id: int
    replica_epoch: int  # the follower's broker epoch (KIP-903: a new process's progress starts over)
    fetch_offset: int
    current_leader_epoch: int
    last_fetched_epoch: int
    high_watermark: int  # the follower's: the leader leaves out an answer that would change nothing
    session_id: int = 0
    session_epoch: int | None = None  # None: no session; 0: a full fetch opening one
    named: bool = True  # False: an incremental fetch that does not name the partition (the fields above are stale)


@dataclass(frozen=True)
class FetchResponse:
    error: int = 0
    high_watermark: int = -1
    log_start_offset: int = 0
    records: bytes = b""
    diverging: tuple[int, int] | None = None
    left_out: bool = False  # the partition was not in the answer (replication/follower.py changes_nothing)
    session_id: int = 0
    session_error: int = 0  # a refused session: the whole answer


class SimLog(MemoryPartitionLog):
    """``MemoryPartitionLog`` plus a mirror of its batches (kept from public state) for the checker."""

    def __init__(self) -> None:
        super().__init__()
        self.bases: list[int] = []
        self.batches: list[bytes] = []
        self.cuts: list[int] = []  # the log end after each truncation, reset or crash
        self.truncations: list[int] = []  # the log end after each ``truncate_to`` (not a crash)
        self.lost: list[list[bytes]] = []  # the batches each crash dropped

    def append(self, batches: Sequence[bytes], *, sync: bool = False) -> None:
        super().append(batches, sync=sync)
        self.bases.extend(parse_header(raw).base_offset for raw in batches)
        self.batches.extend(bytes(raw) for raw in batches)

    def truncate_to(self, offset: int) -> None:
        super().truncate_to(offset)
        self.truncations.append(self.log_end_offset)
        self._cut()

    def reset_to(self, offset: int) -> None:
        super().reset_to(offset)
        self.bases, self.batches = [], []
        self._cut()

    def crash(self) -> None:
        super().crash()
        self.lost.append(self.batches[bisect.bisect_left(self.bases, self.log_end_offset) :])
        self._cut()

    def _cut(self) -> None:
        keep = bisect.bisect_left(self.bases, self.log_end_offset)
        del self.bases[keep:], self.batches[keep:]
        self.cuts.append(self.log_end_offset)

    def next_offset(self, i: int) -> int:
        return self.bases[i + 1] if i + 1 < len(self.bases) else self.log_end_offset

    def sync(self) -> None:
        """The group commit's fsync (node/group_commit.py): every earlier write becomes durable."""
        self._mark_synced()


class SimBroker:
    """One broker process: lifecycle, replica manager, fetcher, ISR manager and service."""

    def __init__(self, sim: Sim, broker_id: int) -> None:
        self.sim, self.id, self.log = sim, broker_id, sim.log_class()
        self.up, self.paused, self.incarnation, self.held = True, False, 0, list[Fn]()
        self.boot()

    def boot(self) -> None:
        self.incarnation += 1
        self.incarnation_id = f"b{self.id}-{self.incarnation}"
        self.image = MetadataImage()
        self.part: Partition | None = None
        self.epoch, self.registering, self.isr_busy, self.wake_due = -1, False, False, False
        self.clean = False  # every process start here follows a kill: no clean-shutdown marker
        self.parked: list[tuple[FetchRequest, Reply]] = []
        self.session_parked: list[tuple[FetchSession, FetchRequest, Reply]] = []  # parked on a session's watch
        self.waiters: list[Waiter] = []
        self.fetch_token, self.fetch_leader = 0, -1
        self.fetch_waiters = FetchWaiters()
        self.fetch_sessions = FetchSessions(self.fetch_waiters)  # as a leader
        self.follower_session = FollowerSession()  # as a follower, of the fetch loop running now
        for fn in (self.lifecycle, self.isr_check, self.fetch_round):
            self.timer(0, fn)

    def guard(self, incarnation: int, fn: Fn) -> Fn:
        """``fn`` as work of this process: held while paused, dropped once the process died."""

        def run() -> None:
            if self.up and self.incarnation == incarnation:
                self.held.append(fn) if self.paused else fn()

        return run

    def timer(self, ms: int, fn: Fn) -> None:
        self.sim.at(ms, self.guard(self.incarnation, fn))

    def hw(self) -> int:
        return self.part.high_watermark if self.part is not None else self.log.high_watermark

    # -- node/lifecycle.py --

    def lifecycle(self) -> None:
        self.timer(HEARTBEAT_MS, self.lifecycle)
        if self.epoch >= 0:
            state = self.image.partition(TOPIC_ID, 0)
            logs = self.log_report() if state is not None and state.recovering else {}
            request = (self.id, self.epoch, self.image.offset, logs)
            self.sim.call(self.id, "c", lambda r: self.sim.ctl_heartbeat(*request, r), self.on_heartbeat)
        elif not self.registering:
            self.registering, args = True, (self.id, self.incarnation_id, self.clean, self.log_report())
            self.sim.call(self.id, "c", lambda r: self.sim.ctl_register(*args, r), self.on_registered)

    def log_report(self) -> dict[TopicIdPartition, tuple[int, int]]:
        """Broker.replica_logs: (latest epoch, log end) of the local replica."""
        return {TopicIdPartition(TOPIC_ID, 0): (self.log.latest_epoch, self.log.log_end_offset)}

    def on_registered(self, epoch: int | None) -> None:
        self.registering = False
        if epoch is not None:
            self.epoch, self.clean = epoch, True  # a re-registration by this process has lost nothing

    def on_heartbeat(self, code: int | None) -> None:
        if code in (ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED):
            self.epoch, self.incarnation_id = -1, f"{self.incarnation_id}+"

    # -- node/broker.py: the replica manager --

    def applies(self, image: MetadataImage) -> bool:
        """Whether this image may be acted on now: ``Broker.catch_up``'s call of the real rule
        (the seam where ``BuggyBroker`` drops the call, as the old broker did not make it)."""
        return caught_up_to_registration(image.offset, self.epoch)

    def on_image(self, new: MetadataImage) -> None:
        if new.offset <= self.image.offset or not self.applies(new):
            return
        old, self.image = self.image, new
        changes = local_changes(old, new, self.id)
        for change in [*changes.leaders.values(), *changes.followers.values()]:
            s, now = change.state, self.sim.now
            part = self.part = self.part or self.sim.partition_class(TOPIC, 0, self.log)
            if s.leader == self.id:
                args = (self.id, s.replicas, s.isr, s.leader_epoch, s.partition_epoch)
                part.become_leader(*args, lag_time_max_ms=LAG_MS, now_ms=now, min_insync_replicas=MIN_ISR)
            else:
                part.become_follower(s.leader, s.leader_epoch)
            self.sim.note(f"b{self.id}: leader b{s.leader} epoch {s.leader_epoch} isr {list(s.isr)}")
        self.notify()
        leader = self.part.leader_id if self.part is not None and not self.part.is_leader else -1
        if leader != self.fetch_leader:  # reconcile(): stop the fetch loop, start one for the new leader
            self.fetch_token, self.fetch_leader = self.fetch_token + 1, leader
            self.follower_session = FollowerSession()  # a new loop: a new session
            self.timer(0, self.fetch_round)

    def leader_partition(self) -> Partition:
        state = self.image.partition(TOPIC_ID, 0)
        if state is None:
            raise KetchError("unknown partition", code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        if state.leader == -1:
            raise KetchError("no leader", code=ErrorCode.LEADER_NOT_AVAILABLE)
        if state.leader != self.id or self.part is None or not self.part.is_leader:
            raise KetchError(f"b{self.id} is not the leader", code=ErrorCode.NOT_LEADER_OR_FOLLOWER)
        return self.part

    def notify(self) -> None:
        """FetchWaiters.notify: parked fetches and acks=all waiters look again, soon (fetch sessions'
        watches note the partition at once)."""
        self.fetch_waiters.notify(KEY)
        if not self.wake_due:
            self.wake_due = True
            self.timer(0, self.wake)

    def wake(self) -> None:
        self.wake_due = False
        parked, self.parked = self.parked, []
        for request, reply in parked:
            self.try_fetch(request, reply, final=False)
        session_parked, self.session_parked = self.session_parked, []
        for entry in session_parked:
            session, cached, respond = entry
            if session.watch.take():  # the session's watch heard of the partition: read it now
                self.serve_fetch(replace(cached, session_epoch=None), respond)
            else:
                self.session_parked.append(entry)
        for waiter in list(self.waiters):
            self.check_waiter(waiter, final=False)

    # -- node/service.py: Produce --

    def serve_produce(self, acks: int, batch: bytes, reply: Reply) -> None:
        try:
            part, sync = self.leader_partition(), self.sim.rng.random() < self.sim.p_sync
            done = part.append(batch, max_message_bytes=1 << 20, acks=acks, min_insync_replicas=MIN_ISR, sync=sync)
        except KetchError as exc:
            return reply((int(exc.code), -1))
        self.sim.duplicate_answers += done.duplicate
        self.notify()
        if acks != -1:
            return reply((0, done.base_offset))
        waiter = (part, part.leader_epoch, done.last_offset, done.base_offset, reply)
        self.waiters.append(waiter)
        self.timer(PRODUCE_TIMEOUT_MS, lambda: self.check_waiter(waiter, final=True))

    def check_waiter(self, waiter: Waiter, final: bool) -> None:
        """``await_replication``: ask ``acks_all_outcome`` when the partition moves and at the deadline."""
        part, epoch, last, base, reply = waiter
        if waiter not in self.waiters:
            return
        outcome = acks_all_outcome(part, epoch, last, MIN_ISR, timed_out=final, timeout_ms=PRODUCE_TIMEOUT_MS)
        if outcome is None:
            return
        self.waiters.remove(waiter)
        reply((int(outcome.error), base if not outcome.error else -1))

    # -- node/service.py: Fetch from a follower --

    def serve_fetch(self, request: FetchRequest, reply: Reply) -> None:
        if request.session_epoch is not None:
            return self.serve_session_fetch(request, reply)
        if self.try_fetch(request, reply, final=False):
            self.timer(FETCH_WAIT_MS, lambda: self.expire_fetch(request, reply))

    def serve_session_fetch(self, request: FetchRequest, reply: Reply) -> None:
        """node/fetch_service.py with a session: open or resume it, then read the partition or count
        it as fetched again at what it last named."""
        try:
            if request.session_epoch == 0:
                session = self.fetch_sessions.open(request.replica_id, request.replica_epoch)
            else:
                args = (request.replica_id, request.replica_epoch, request.session_id, request.session_epoch or 0)
                session = self.fetch_sessions.resume(*args)
        except KetchError as exc:
            self.sim.session_refusals += 1
            return reply(FetchResponse(session_error=int(exc.code)))
        named = []
        if request.named:
            r = request
            named.append(
                pb.FetchPartition(
                    topic=TOPIC,
                    partition=0,
                    fetch_offset=r.fetch_offset,
                    current_leader_epoch=r.current_leader_epoch,
                    last_fetched_epoch=r.last_fetched_epoch,
                    high_watermark=r.high_watermark,
                )
            )
        _, to_read = session.begin(named, self.fetch_waiters)
        item = session.items[KEY]
        cached = replace(
            request,
            fetch_offset=item.fetch_offset,
            current_leader_epoch=item.current_leader_epoch,
            last_fetched_epoch=item.last_fetched_epoch,
            high_watermark=item.high_watermark,
        )

        def respond(response: FetchResponse) -> None:
            behind = response.left_out and cached.fetch_offset < self.log.log_end_offset
            session.carried = {KEY} if not response.left_out or behind else set()
            reply(replace(response, session_id=session.session_id))

        if KEY not in to_read:
            try:
                part = self.leader_partition()
            except KetchError:
                pass  # no longer led here: read it (an error answer)
            else:
                self.sim.unnamed_fetches += 1
                if self.fetched_again(part, session, cached):
                    self.notify()
                entry = (session, cached, respond)
                self.session_parked.append(entry)  # read once the session's watch hears of the partition
                self.timer(FETCH_WAIT_MS, lambda: self.expire_session_fetch(entry))
                return
        self.serve_fetch(replace(cached, session_epoch=None), respond)

    def expire_session_fetch(self, entry: tuple[FetchSession, FetchRequest, Reply]) -> None:
        """A parked session fetch at its deadline answers nothing, without a read."""
        if entry in self.session_parked:
            self.session_parked.remove(entry)
            entry[2](FetchResponse(left_out=True))

    def fetched_again(self, part: Partition, session: FetchSession, cached: FetchRequest) -> bool:
        """node/fetch_service.py ``_fetched_again``: the unnamed partition is fetched at what it last named."""
        return part.on_follower_fetch(session.replica_id, cached.fetch_offset, self.sim.now, session.replica_epoch)

    def expire_fetch(self, request: FetchRequest, reply: Reply) -> None:
        if (request, reply) in self.parked:
            self.parked.remove((request, reply))
            self.try_fetch(request, reply, final=True)

    def try_fetch(self, request: FetchRequest, reply: Reply, final: bool) -> bool:
        """One ``_read_all``: answer, or park the fetch (True) until there is data or it is ``final``."""
        try:
            part = self.leader_partition()
            part.check_epoch(request.current_leader_epoch)
            args = (request.replica_id, request.replica_epoch, request.fetch_offset, request.last_fetched_epoch)
            fetch = part.serve_follower_fetch(*args, 1 << 20, self.sim.now)
            if fetch.high_watermark_moved:
                self.notify()
            if fetch.error is not None:
                raise fetch.error
            read = fetch.read
        except KetchError as exc:
            reply(FetchResponse(error=int(exc.code), log_start_offset=self.log.log_start_offset))
            return False
        if read.diverging is None and not read.records and not final:
            self.parked.append((request, reply))
            return True
        if changes_nothing(
            read.records, read.diverging, read.high_watermark, request.fetch_offset, request.high_watermark
        ):
            reply(FetchResponse(left_out=True))
            return False
        reply(FetchResponse(0, read.high_watermark, read.log_start_offset, read.records, read.diverging))
        return False

    # -- node/replica_fetcher.py --

    def fetch_round(self) -> None:
        part = self.part
        if part is None or part.is_leader or part.leader_id < 0:
            return self.timer(100, self.fetch_round)
        self.fetch_token += 1
        token, leader, log = self.fetch_token, self.sim.brokers[part.leader_id], self.log
        request = FetchRequest(
            self.id, self.epoch, log.log_end_offset, part.leader_epoch, max(log.latest_epoch, -1), part.high_watermark
        )
        sent = (part, part.leader_epoch, log.log_end_offset)
        session, states, named = self.follower_session, {KEY: _state(request)}, list[Any]()
        if self.sim.params.sessions:
            epoch, named = session.plan(states)
            request = replace(request, session_id=session.session_id, session_epoch=epoch, named=bool(named))

        def on_reply(response: FetchResponse | None) -> None:
            if token != self.fetch_token:
                return  # that loop was cancelled: the leader moved
            if response is None:
                session.reset()
                return self.timer(200, self.fetch_round)  # transport error: back off
            if self.sim.params.sessions:
                answer = pb.FetchResponse(
                    session_id=response.session_id, error_code=ErrorCode(response.session_error).name
                )
                if not session.answered(states, named, answer):
                    return self.timer(0, self.fetch_round)  # refused: a full fetch at once
            progressed = self.apply_fetch(sent, response)
            self.timer(100 if response.error and not progressed else 0, self.fetch_round)

        serve = functools.partial(leader.serve_fetch, request)
        self.sim.call(self.id, leader.id, serve, on_reply, FETCH_WAIT_MS + RPC_TIMEOUT_MS)

    def apply_fetch(self, sent: tuple[Partition, int, int], response: FetchResponse) -> bool:
        (part, epoch, offset), log = sent, self.log
        if part is not self.part or response.left_out:
            return False  # a previous process's replica; or nothing to apply
        r = response
        answer = FetchAnswer(epoch, offset, r.error, r.high_watermark, r.log_start_offset, r.records, r.diverging)
        update = part.apply_fetch_answer(answer)
        if update.note is not None:
            self.sim.note(f"b{self.id} {update.note}")
        if update.appended and self.sim.rng.random() < self.sim.p_sync:
            log.sync()
        return update.changed

    # -- node/isr_manager.py --

    def isr_check(self) -> None:
        self.timer(ISR_CHECK_MS, self.isr_check)
        leader = self.part.leader if self.part is not None else None
        if self.epoch < 0 or leader is None or self.isr_busy:
            return
        proposal = leader.propose_isr_change(self.sim.now)
        if proposal is None:
            return
        self.isr_busy = True
        self.sim.note(f"b{self.id} proposes ISR {list(proposal.new_isr)} ({proposal.reason})")
        args = (self.id, self.epoch, leader.leader_epoch, proposal.partition_epoch, proposal.new_isr)
        epochs = leader.isr_broker_epochs(proposal.new_isr)

        def on_reply(code: int | None) -> None:
            self.isr_busy = False
            if code is None or code:  # refused or unanswered: the real driver clears the proposal
                leader.on_isr_rejected()

        self.sim.call(self.id, "c", lambda r: self.sim.ctl_alter_partition(*args, r, epochs), on_reply)


class Sim:
    log_class: type[SimLog] = SimLog
    broker_class: type[SimBroker] = SimBroker
    partition_class: type[Partition] = Partition
    ctl_min_isr = MIN_ISR  # the controller's min.insync.replicas default: the ISR floor

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.rng = rng = random.Random(params.seed)
        self.drop = rng.choice([0.0, 0.01, 0.03, 0.08])
        self.max_delay = rng.choice([2, 5, 15, 30])
        self.p_sync = 0.0 if params.acks == 1 else rng.choice([0.0, 0.0, 0.2, 0.6, 1.0])
        self.now, self.events, self._seq, self._queue = 0, 0, 0, list[tuple[int, int, Fn]]()
        self.trace: deque[str] = deque(maxlen=40)
        self.ctl = Controller(
            ControllerConfig(broker_session_timeout_ms=SESSION_MS, min_insync_replicas=self.ctl_min_isr)
        )
        self.ctl.activate()
        self.md_offset, self.cut = 0, set[frozenset[Endpoint]]()
        self.brokers = {b: self.broker_class(self, b) for b in BROKERS}
        self.down: int | None = None
        self.in_flight, self.attempts = 0, 0  # unacknowledged batches; batches made
        self.pending: list[PendingBatch] = []
        self.producer_epoch, self.next_seq, self.sends = 0, 0, 0
        self.duplicate_answers = self.retries = self.epoch_bumps = 0
        self.unnamed_fetches = self.session_refusals = 0  # fetch sessions (SimParams.sessions)
        self.retry_due = False
        self.conn: Connection | None = None
        self.request_at = 0  # when the producer's latest request arrives: they arrive in order

    # -- scheduler and network --

    def at(self, delay_ms: int, fn: Fn) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay_ms, self._seq, fn))

    def note(self, line: str) -> None:
        self.trace.append(f"{self.now:6d} {line}")

    def send(self, src: Endpoint, dst: Endpoint, fn: Fn, incarnation: int | None = None) -> None:
        link = frozenset((src, dst))
        if link in self.cut or self.rng.random() < self.drop:
            return
        if isinstance(dst, int):  # to the process that is up now, or that sent the request
            b = self.brokers[dst]
            fn = b.guard(b.incarnation if incarnation is None else incarnation, fn)
        self.at(self.rng.randint(1, self.max_delay), lambda: None if link in self.cut else fn())

    def call(
        self, src: Endpoint, dst: Endpoint, serve: Callable[[Reply], None], on_reply: Reply, timeout: int = 0
    ) -> None:
        """A request and its reply; ``on_reply(None)`` if none came within ``timeout`` ms."""
        done, caller = [False], self.brokers.get(src) if isinstance(src, int) else None
        incarnation = caller.incarnation if caller is not None else None

        def finish(response: Any) -> None:
            if not done[0]:
                done[0] = True
                on_reply(response)

        self.send(src, dst, lambda: serve(lambda response: self.send(dst, src, lambda: finish(response), incarnation)))
        (caller.timer if caller is not None else self.at)(timeout or RPC_TIMEOUT_MS, lambda: finish(None))

    # -- the controller --

    def commit(self, records: list[MetadataRecord]) -> None:
        if not records:
            return
        self.md_offset += 1
        self.ctl.replay_batch(self.md_offset, records)
        state = self.ctl.image.partition(TOPIC_ID, 0)
        if state is not None:
            if (why := state.check()) is not None:
                self.fail(f"the controller's image breaks the partition invariants: {why}")
            self.note(f"ctl @{self.md_offset}: leader {state.leader} epoch {state.leader_epoch} isr {list(state.isr)}")
        self.push_metadata()

    def push_metadata(self) -> None:
        for b in self.brokers.values():
            if b.up and b.image.offset < self.ctl.image.offset:
                self.send("c", b.id, functools.partial(b.on_image, self.ctl.image))

    def controller_tick(self) -> None:
        self.at(CONTROLLER_TICK_MS, self.controller_tick)
        self.commit(self.ctl.tick(self.now).records)
        self.push_metadata()
        if self.ctl.image.topic(TOPIC) is None and len(self.ctl.image.usable_broker_ids) == len(BROKERS):
            start = self.rng.randrange(len(BROKERS))
            self.commit(self.ctl.create_topic(TOPIC, 1, len(BROKERS), topic_id=TOPIC_ID, start_index=start).records)
            self.started()

    def ctl_register(self, broker_id: int, incarnation_id: str, clean: bool, logs: LogReport, reply: Reply) -> None:
        args = (broker_id, incarnation_id, "sim", 9000 + broker_id)
        result = self.ctl.register_broker(*args, now_ms=self.now, clean_shutdown=clean, replica_logs=logs)
        self.commit(result.records)
        reply(self.md_offset)

    def ctl_heartbeat(self, broker_id: int, epoch: int, offset: int, logs: LogReport, reply: Reply) -> None:
        try:
            result = self.ctl.broker_heartbeat(broker_id, epoch, offset, now_ms=self.now, replica_logs=logs)
            self.commit(result.records)
        except KetchError as exc:
            return reply(int(exc.code))
        reply(0)

    def ctl_alter_partition(
        self, broker: int, epoch: int, l_epoch: int, p_epoch: int, isr: tuple[int, ...], reply: Reply, epochs: Any
    ) -> None:
        try:
            args = (broker, epoch, TOPIC_ID, 0)
            result = self.ctl.alter_partition(
                *args, leader_epoch=l_epoch, partition_epoch=p_epoch, new_isr=isr, isr_broker_epochs=epochs
            )
        except KetchError as exc:
            return reply(int(exc.code))
        self.commit(result.records)
        reply(0)

    # -- the producer, faults and hooks --

    def produce(self, count: int, acks: int, tag: str, on_done: Callable[[list[int]], None]) -> None:
        """Queue ``count`` records (values ``<tag>:<i>``) until acknowledged; ``on_done(offsets)`` then."""
        self.attempts, self.in_flight = self.attempts + 1, self.in_flight + 1
        batch = PendingBatch(tag, count, acks, on_done)
        if self.params.idempotent:
            batch.epoch, batch.seq = self.producer_epoch, self.next_seq
            self.next_seq += count
        self.pending.append(batch)
        self.send_pending()

    def send_pending(self) -> None:
        """Send every unacknowledged batch not in flight, oldest first, to the leader the controller names."""
        state = self.ctl.image.partition(TOPIC_ID, 0)
        if state is None or state.leader < 0:
            return self.retry_later()
        target = self.brokers[state.leader]
        busy = any(b.in_flight for b in self.pending)
        if busy and (any(b.attempt and not b.in_flight for b in self.pending) or self.conn_to(target) is None):
            return  # a retry, or a new leader, waits for the requests in flight; then all go in order
        for batch in self.pending:
            if batch.in_flight:
                continue
            batch.in_flight, batch.refused = True, False
            batch.attempt, self.sends = batch.attempt + 1, self.sends + 1
            self.retries += batch.attempt > 1
            pid = PRODUCER_ID if batch.seq >= 0 else -1
            records = make_batch(
                0, batch.count, tag=batch.tag, producer_id=pid, producer_epoch=batch.epoch, base_sequence=batch.seq
            )
            serve = functools.partial(target.serve_produce, batch.acks, records)
            reply = functools.partial(self.produced, batch, batch.attempt, batch.epoch)
            self.call_in_order(target, serve, reply, PRODUCE_TIMEOUT_MS + 500)

    def conn_to(self, target: SimBroker) -> Connection | None:
        conn = self.conn
        if conn is None or conn.broken or (conn.broker, conn.incarnation) != (target.id, target.incarnation):
            return None
        return conn

    def call_in_order(self, target: SimBroker, serve: Callable[[Reply], None], on_reply: Reply, timeout: int) -> None:
        """``call`` from the producer over its ``Connection`` (opened again if broken or to another process)."""
        conn = self.conn_to(target) or Connection(target.id, target.incarnation)
        self.conn = conn
        done, link = [False], frozenset(("p", target.id))

        def finish(response: Any) -> None:
            if not done[0]:
                done[0] = True
                on_reply(response)

        def arrives(fn: Fn) -> Fn:
            def run() -> None:
                if conn.broken or link in self.cut or lost:
                    conn.broken = True
                else:
                    fn()

            lost = self.rng.random() < self.drop
            return run

        def reply(response: Any) -> None:
            conn.last_reply_at = max(conn.last_reply_at, self.now + self.rng.randint(1, self.max_delay))
            self.at(conn.last_reply_at - self.now, arrives(lambda: finish(response)))

        self.request_at = max(self.request_at, self.now + self.rng.randint(1, self.max_delay))
        self.at(self.request_at - self.now, arrives(target.guard(target.incarnation, lambda: serve(reply))))
        self.at(timeout, lambda: finish(None))

    def produced(self, batch: PendingBatch, attempt: int, epoch: int, response: tuple[int, int] | None) -> None:
        if batch not in self.pending:
            return  # acknowledged by another attempt
        if response is not None and response[0] == 0:
            self.pending.remove(batch)
            self.in_flight -= 1
            batch.on_done([response[1] + i for i in range(batch.count)])
        elif attempt == batch.attempt:  # not an older attempt's failure (the batch went again since)
            batch.in_flight = False
            batch.refused = response is not None and response[0] in BUMP_EPOCH and epoch == self.producer_epoch
        if self.pending and self.pending[0].refused and all(b.refused for b in self.pending):
            self.bump_epoch()
        self.retry_later()

    def bump_epoch(self) -> None:
        """KIP-360: a new epoch, sequences from 0 for every unacknowledged batch. Only once every one
        of them was refused as out of order under the current epoch, so none of them is stored (a
        stored one comes back as a duplicate with its offsets): renumbering a batch that might be
        stored would store it twice."""
        self.producer_epoch, self.next_seq, self.epoch_bumps = self.producer_epoch + 1, 0, self.epoch_bumps + 1
        self.note(f"producer: every batch out of order; epoch {self.producer_epoch}, sequences from 0")
        for batch in self.pending:
            batch.epoch, batch.seq, batch.refused = self.producer_epoch, self.next_seq, False
            self.next_seq += batch.count

    def retry_later(self) -> None:
        if not self.retry_due:
            self.retry_due = True
            self.at(RETRY_BACKOFF_MS, self.retry)

    def retry(self) -> None:
        self.retry_due = False
        self.send_pending()

    def started(self) -> None:
        """Hook: the topic exists (the scenario starts its workload and faults)."""

    def checked(self) -> None:
        """Hook: after every event (the scenario checks its invariants)."""

    def killing(self, b: SimBroker, power_loss: bool) -> None:
        """Hook: ``b`` is about to be killed."""

    # -- faults --

    def kill(self, b: SimBroker, power_loss: bool) -> None:
        self.note(f"FAULT kill b{b.id} ({'power loss' if power_loss else 'process'}) leo {b.log.log_end_offset}")
        self.killing(b, power_loss)
        b.up, b.paused, b.held, b.part, self.down = False, False, [], None, b.id
        if power_loss:
            b.log.crash()

    def restart(self, b: SimBroker) -> None:
        if not b.up:
            self.note(f"restart b{b.id} leo {b.log.log_end_offset}")
            b.up, self.down = True, None
            b.boot()

    def resume(self, b: SimBroker) -> None:
        if b.paused:
            self.note(f"resume b{b.id}")
            b.paused, held, b.held = False, b.held, []
            for fn in held:
                fn()

    # -- running --

    def variant(self) -> str:
        """Hook: the environment that selects this model in ``test_replay`` (after the seed and acks)."""
        return ""

    def fail(self, what: str) -> None:
        env = f"REPL_SIM_SEED={self.params.seed}" + (" REPL_SIM_ACKS=1" if self.params.acks == 1 else "")
        env += "" if self.params.idempotent else " REPL_SIM_IDEMPOTENCE=0"
        env += " REPL_SIM_SESSIONS=1" if self.params.sessions else ""
        env += self.variant()
        raise SimFailure(
            f"seed {self.params.seed} ({type(self).__name__}, acks={self.params.acks}, "
            f"idempotent={self.params.idempotent}, sessions={self.params.sessions}) at t={self.now} ms: {what}\n"
            f"reproduce: {env} pytest tests/test_replication_sim.py -k replay\nlast events:\n  "
            + "\n  ".join(self.trace)
        )

    def run_until(self, stop: Callable[[], bool], until_ms: int) -> bool:
        while self._queue and self._queue[0][0] <= until_ms:
            self.now, _, fn = heapq.heappop(self._queue)
            try:
                fn()
            except SimFailure:
                raise
            except Exception as exc:  # the real driver's task dies here (or answers UNKNOWN_SERVER_ERROR)
                self.fail(f"{type(exc).__name__} in the drivers' use of the pure classes: {exc}")
            self.events += 1
            self.checked()
            if stop():
                return True
        return False

    def converged(self) -> bool:
        state = self.ctl.image.partition(TOPIC_ID, 0)
        if state is None or state.leader < 0 or len(state.isr) != len(BROKERS):
            return False
        if any(b.part is None or b.part.high_watermark < b.log.log_end_offset for b in self.brokers.values()):
            return False
        first = self.brokers[BROKERS[0]].log
        return all(b.log.batches == first.batches for b in self.brokers.values())

    def describe(self) -> str:
        out = [f"controller {self.ctl.image.partition(TOPIC_ID, 0)}"]
        for b in self.brokers.values():
            role = "-" if b.part is None else "leader" if b.part.is_leader else f"follows b{b.part.leader_id}"
            out.append(f"b{b.id} {role} leo {b.log.log_end_offset} hw {b.hw()} epochs {b.log.epoch_entries()}")
        return "; ".join(out)
