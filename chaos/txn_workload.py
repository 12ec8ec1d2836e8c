"""The transactional workload: transactions over several partitions, consume-transform-produce, readers.

Rules (the history's operations are listed in chaos/txn_checker.py):
- Transactional producer ``k`` (transactional id ``tx-<k>``) runs one transaction at a
  time: ``begin``, 1-5 sends of unique values to random partitions of ``txn`` (a fifth
  of them to ``txn2``), waits for every send's outcome, then commits (70 %) or aborts;
  a transaction with a send that did not succeed is aborted. Every call is recorded
  before it is made and its outcome after.
- A failed commit is ``unknown`` (it may have committed), a failed abort changes
  nothing (no commit was asked for). After any failed commit or abort, or a fatal
  error such as PRODUCER_FENCED, the producer is closed and re-created with the same
  transactional id: a new session (``init``) fences the old one and ends its open
  transaction.
- Zombies: now and then (``zombie_every`` transactions) a producer starts a second
  session of its id while its transaction is open, then lets the old session send
  one more value and commit. The new session's InitProducerId was answered before
  that commit was asked for, so the old transaction must never be visible: its failed
  commit is recorded ``fail`` (definitely not committed), and a commit answered ok would
  be a fenced commit (chaos/txn_checker.py).
- Consume-transform-produce: a plain idempotent producer writes ``in-<n>`` to
  ``ctp-in``; each member of group ``ctp`` (read_committed, no auto-commit) has its
  own transactional producer (``ctp-<m>``) and copies each polled value to
  ``ctp-out`` as ``<input>@<txn>`` with ``input`` in the send, then commits the polled
  offsets with ``send_offsets_to_transaction``: one transaction per poll batch, a tenth
  of them aborted (the batch is then processed again). Any error re-creates the
  member (consumer and producer): the group's committed offsets say where to resume.
  After the stop, members go on (up to 30 s) until the input producer is done and the
  group's committed offsets reached the end of ``ctp-in``; then ``stop()`` records ``ctp
  caught_up`` if they did (else ``ctp behind``).
- Readers assign every partition of ``txn``, ``txn2`` and ``ctp-out`` from offset 0 and
  record each value with ``iso`` read_committed. ``reader_isolation`` lets a control run
  read with read_uncommitted while still recording read_committed: a planted bug the
  checker must report as aborted reads.
- ``drain()``, after healing: a read_uncommitted drain (``final-uncommitted``) gives
  every value's place; the read_committed one (``final``) waits until no transaction is
  open (the last stable offset reaches the high watermark) and reads to the end.
- Clients dial nodes' real ports (``direct``, chaos/workload.py); transactional
  producers dial ``client_address`` instead, which may route through the gRPC proxy
  that delays and duplicates EndTxn (chaos/grpc_proxy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from chaos.history import History
from chaos.workload import direct, stop_tasks
from ketch import aio
from ketch.errors import KetchError
from ketch.records import TopicPartition

TXN_TOPIC, TXN_TOPIC_2, CTP_IN, CTP_OUT = "txn", "txn2", "ctp-in", "ctp-out"
TOPIC_PARTITIONS = {TXN_TOPIC: 3, TXN_TOPIC_2: 2, CTP_IN: 2, CTP_OUT: 2}
READ_TOPICS = (TXN_TOPIC, TXN_TOPIC_2, CTP_OUT)
GROUP = "ctp"
Address = dict[tuple[str, int], tuple[str, int]]


def short(exc: BaseException) -> str:
    return f"{exc!r}"[:200]


class TxnWorkload:
    def __init__(
        self,
        bootstrap: str,
        history: History,
        real_address: Address,
        *,
        client_address: Address | None = None,
        seed: int = 0,
        producers: int = 2,
        ctp_members: int = 2,
        readers: int = 1,
        rate: float = 10.0,
        ctp_rate: float = 50.0,
        transaction_timeout_ms: int = 10000,
        zombie_every: int = 40,
        reader_isolation: str = "read_committed",
    ) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.real_address = real_address
        self.client_address = client_address or real_address
        self.rng = random.Random(seed)
        self.producers = producers
        self.ctp_members = ctp_members
        self.readers = readers
        self.rate = rate
        self.ctp_rate = ctp_rate
        self.transaction_timeout_ms = transaction_timeout_ms
        self.zombie_every = zombie_every
        self.reader_isolation = reader_isolation
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self._next_catch_up_check = 0.0

    @property
    def transactional_ids(self) -> list[str]:
        return [f"tx-{k}" for k in range(self.producers)] + [f"ctp-{m}" for m in range(self.ctp_members)]

    def start(self) -> None:
        for k in range(self.producers):
            self.tasks.append(asyncio.create_task(self._transactions(k), name=f"tx-{k}"))
        if self.ctp_members:
            self.tasks.append(asyncio.create_task(self._ctp_input(), name="ctp-input"))
        for m in range(self.ctp_members):
            self.tasks.append(asyncio.create_task(self._ctp_member(m), name=f"ctp-{m}"))
        for r in range(self.readers):
            self.tasks.append(asyncio.create_task(self._reader(r), name=f"reader-{r}"))

    async def stop(self, timeout_s: float = 45.0) -> None:
        await stop_tasks(self.stopping, self.tasks, timeout_s)
        if self.ctp_members:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ctp_caught_up(), 30)

    async def _ctp_caught_up(self) -> None:
        """Record ``ctp caught_up`` if the group's committed offsets reached the end of ``ctp-in``:
        then every acknowledged input must be in the output (chaos/txn_checker.py)."""
        consumer = direct(
            aio.Consumer(bootstrap_servers=self.bootstrap, group_id=GROUP, enable_auto_commit=False),
            self.real_address,
        )
        try:
            tps = [TopicPartition(CTP_IN, p) for p in range(TOPIC_PARTITIONS[CTP_IN])]
            ends = await consumer.end_offsets(tps)
            committed = {tp: await consumer.committed(tp) for tp in tps}
            offsets = {f"{tp.topic}-{tp.partition}": [committed[tp], ends[tp]] for tp in tps}
            kind = "caught_up" if all((committed[tp] or 0) >= ends[tp] for tp in tps) else "behind"
            self.history.record("ctp", kind, proc="ctp-check", offsets=offsets)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), 10)

    # -- transactional producers ----------------------------------------------
    def _producer(self, tid: str) -> aio.Producer:
        return direct(
            aio.Producer(
                self.bootstrap,
                transactional_id=tid,
                transaction_timeout_ms=self.transaction_timeout_ms,
                linger_ms=2,
                request_timeout_ms=3000,
                delivery_timeout_ms=20000,
                retry_backoff_ms=100,
                max_block_ms=10000,
            ),
            self.client_address,
        )

    async def _session(self, tid: str, proc: str, until: Any = None) -> aio.Producer | None:
        """A new producer session for ``tid`` (InitProducerId retried until it answers or the run stops)."""
        while until() if until is not None else not self.stopping.is_set():
            producer = self._producer(tid)
            self.history.record("init", "invoke", proc=proc, tid=tid)
            try:
                await asyncio.wait_for(producer.init_transactions(), 30)
            except (KetchError, TimeoutError) as exc:
                self.history.record("init", "fail", proc=proc, tid=tid, error=short(exc))
                await close(producer)
                await asyncio.sleep(0.3)
                continue
            self.history.record("init", "ok", proc=proc, tid=tid)
            return producer
        return None

    async def _send(
        self, producer: aio.Producer, proc: str, txn: str, topic: str, partition: int | None, value: str, **extra: Any
    ) -> asyncio.Future[Any] | None:
        op_id = self.history.next_id()
        self.history.record("send", "invoke", id=op_id, proc=proc, value=value, topic=topic, txn=txn, **extra)
        try:
            future = await producer.send(topic, value.encode(), partition=partition)
        except (KetchError, TimeoutError) as exc:
            self.history.record("send", "unknown", id=op_id, proc=proc, value=value, error=short(exc))
            return None
        return asyncio.ensure_future(self._outcome(op_id, proc, value, topic, future))

    async def _outcome(self, op_id: int, proc: str, value: str, topic: str, future: Any) -> bool:
        try:
            meta = await asyncio.wait_for(future, 40)
        except (KetchError, TimeoutError, Exception) as exc:
            self.history.record("send", "unknown", id=op_id, proc=proc, value=value, error=short(exc))
            return False
        self.history.record(
            "send", "ok", id=op_id, proc=proc, value=value, topic=topic, partition=meta.partition, offset=meta.offset
        )
        return True

    def _begun(self, proc: str, tid: str, txn: str) -> None:
        timeout_ms = self.transaction_timeout_ms
        self.history.record("txn", "begin", proc=proc, tid=tid, txn=txn, timeout_ms=timeout_ms)

    async def _end(
        self, producer: aio.Producer, proc: str, txn: str, commit: bool, fenced_before: bool = False
    ) -> bool:
        """Commit or abort; True when answered ok."""
        self.history.record("end_txn", "invoke", proc=proc, txn=txn, commit=commit)
        try:
            call = producer.commit_transaction() if commit else producer.abort_transaction()
            await asyncio.wait_for(call, 30)
        except (KetchError, TimeoutError) as exc:
            # A commit after a newer session's InitProducerId was answered cannot commit (the fencing
            # abort came first, and every later call of the old epoch is PRODUCER_FENCED).
            kind = "fail" if fenced_before or not commit else "unknown"
            self.history.record("end_txn", kind, proc=proc, txn=txn, commit=commit, error=short(exc))
            return False
        self.history.record("end_txn", "ok", proc=proc, txn=txn, commit=commit)
        return True

    async def _transactions(self, k: int) -> None:
        tid = proc = f"tx-{k}"
        n = 0
        producer: aio.Producer | None = None
        try:
            while not self.stopping.is_set():
                if producer is None:
                    producer = await self._session(tid, proc)
                    if producer is None:
                        return
                txn = f"{tid}-{n:06d}"
                n += 1
                try:
                    producer.begin_transaction()
                    self._begun(proc, tid, txn)
                    outcomes = []
                    for i in range(self.rng.randint(1, 5)):
                        topic = TXN_TOPIC_2 if self.rng.random() < 0.2 else TXN_TOPIC
                        partition = self.rng.randrange(TOPIC_PARTITIONS[topic])
                        outcomes.append(await self._send(producer, proc, txn, topic, partition, f"{txn}-{i}"))
                    done = [await o if o is not None else False for o in outcomes]
                    if self.zombie_every and n % self.zombie_every == 0 and all(done):
                        producer = await self._zombie(producer, tid, proc, txn)
                        continue
                    commit = all(done) and self.rng.random() < 0.7
                    ended = await self._end(producer, proc, txn, commit)
                except KetchError as exc:
                    self.history.record("txn", "error", proc=proc, tid=tid, txn=txn, error=short(exc))
                    ended = False
                if not ended:
                    if producer is not None:
                        await close(producer)
                    producer = None  # a new session fences this one and ends what it left open
                    continue
                await asyncio.sleep(self.rng.uniform(0.5, 1.5) / self.rate)
        finally:
            if producer is not None:
                await close(producer)

    async def _zombie(self, old: aio.Producer, tid: str, proc: str, txn: str) -> aio.Producer | None:
        """A second session fences ``old`` while its transaction ``txn`` is open; ``old`` then
        sends once more and commits: neither may ever be visible."""
        self.history.record("zombie", "start", proc=proc, tid=tid, txn=txn)
        new = await self._session(tid, proc)
        late = await self._send(old, proc, txn, TXN_TOPIC, 0, f"{txn}-late")
        if late is not None:
            await late
        await self._end(old, proc, txn, commit=True, fenced_before=new is not None)
        await close(old)
        return new

    # -- consume-transform-produce ---------------------------------------------
    async def _ctp_input(self) -> None:
        proc = "ctp-input"
        producer = direct(
            aio.Producer(
                self.bootstrap, linger_ms=2, request_timeout_ms=3000, delivery_timeout_ms=20000, max_block_ms=10000
            ),
            self.real_address,
        )
        pending: set[asyncio.Future[Any]] = set()
        try:
            seq = 0
            while not self.stopping.is_set():
                value = f"in-{seq:07d}"
                seq += 1
                op_id = self.history.next_id()
                self.history.record("send", "invoke", id=op_id, proc=proc, value=value, topic=CTP_IN, ctp_input=True)
                try:
                    future = await producer.send(CTP_IN, value.encode())
                except (KetchError, TimeoutError) as exc:
                    self.history.record("send", "unknown", id=op_id, proc=proc, value=value, error=short(exc))
                    await asyncio.sleep(0.2)
                    continue
                task = asyncio.ensure_future(self._outcome(op_id, proc, value, CTP_IN, future))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(1.0 / self.ctp_rate)
            if pending:
                await asyncio.wait(pending, timeout=40)
        finally:
            await close(producer)

    def _ctp_consumer(self) -> aio.Consumer:
        return direct(
            aio.Consumer(
                CTP_IN,
                bootstrap_servers=self.bootstrap,
                group_id=GROUP,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                fetch_max_wait_ms=200,
                max_poll_records=20,
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
            ),
            self.real_address,
        )

    async def _caught_up(self, consumer: aio.Consumer) -> bool:
        """After the stop: the input producer is done and the group's committed offsets reached
        the end of ``ctp-in`` (asked at most every half second)."""
        if not self.stopping.is_set() or any(not t.done() for t in self.tasks if t.get_name() == "ctp-input"):
            return False
        if time.monotonic() < self._next_catch_up_check:
            return False
        self._next_catch_up_check = time.monotonic() + 0.5
        tps = [TopicPartition(CTP_IN, p) for p in range(TOPIC_PARTITIONS[CTP_IN])]
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(tps), 5)
            for tp in tps:
                committed = await asyncio.wait_for(consumer.committed(tp), 5)
                if not isinstance(committed, int) or committed < ends[tp]:
                    return False
        except (KetchError, TimeoutError):
            return False
        return True

    async def _ctp_member(self, m: int) -> None:
        tid = proc = f"ctp-{m}"
        n = 0
        give_up = [float("inf")]  # the catch-up deadline, set at the stop

        def running() -> bool:
            if self.stopping.is_set() and give_up[0] == float("inf"):
                give_up[0] = time.monotonic() + 30.0
            return time.monotonic() < give_up[0]

        while running():
            producer = await self._session(tid, proc, until=running)
            if producer is None:
                return
            consumer = self._ctp_consumer()
            try:
                await consumer.start()
                while running():
                    batch = await consumer.poll(timeout_ms=200)
                    if not batch:
                        if await self._caught_up(consumer):
                            self.history.record("ctp", "done", proc=proc)
                            return
                        continue
                    txn = f"{tid}-{n:06d}"
                    n += 1
                    producer.begin_transaction()
                    self._begun(proc, tid, txn)
                    outcomes = []
                    for records in batch.values():
                        for r in records:
                            source = (r.value or b"").decode(errors="replace")
                            outcomes.append(
                                await self._send(producer, proc, txn, CTP_OUT, None, f"{source}@{txn}", input=source)
                            )
                    done = [await o if o is not None else False for o in outcomes]
                    offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
                    await asyncio.wait_for(producer.send_offsets_to_transaction(offsets, consumer.group_metadata()), 30)
                    commit = all(done) and self.rng.random() < 0.9
                    if not await self._end(producer, proc, txn, commit):
                        break
                    if not commit:
                        for tp, records in batch.items():
                            if records:
                                await consumer.seek(tp, records[0].offset)  # process the batch again
            except (KetchError, TimeoutError) as exc:
                self.history.record("ctp", "error", proc=proc, error=short(exc))
                await asyncio.sleep(0.3)
            finally:
                await close(producer)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.close(), 10)

    # -- readers -----------------------------------------------------------------
    def _consumer(self, isolation: str) -> aio.Consumer:
        return direct(
            aio.Consumer(
                bootstrap_servers=self.bootstrap,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=200,
                isolation_level=isolation,
            ),
            self.real_address,
        )

    def _all_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in READ_TOPICS for p in range(TOPIC_PARTITIONS[t])]

    def _record_reads(self, proc: str, iso: str, batches: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in batches.items():
            for r in records:
                value = (r.value or b"").decode(errors="replace")
                self.history.record(
                    "read",
                    "ok",
                    proc=proc,
                    iso=iso,
                    topic=tp.topic,
                    partition=r.partition,
                    offset=r.offset,
                    value=value,
                )

    async def _reader(self, k: int) -> None:
        proc = f"reader-{k}"
        consumer = self._consumer(self.reader_isolation)
        try:
            await consumer.assign(self._all_partitions())
            while not self.stopping.is_set():
                try:
                    batches = await consumer.poll(timeout_ms=200)
                except KetchError as exc:
                    self.history.record("read", "error", proc=proc, error=short(exc))
                    await asyncio.sleep(0.2)
                    continue
                self._record_reads(proc, "read_committed", batches)  # what the reader claims
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), 10)

    async def drain(self, timeout_s: float = 90.0) -> bool:
        """The read_uncommitted drain, then the read_committed one; True if both reached the end."""
        deadline = time.monotonic() + timeout_s
        ends = await self._drain("final-uncommitted", "read_uncommitted", deadline, None)
        if ends is None:
            return False
        return await self._drain("final", "read_committed", deadline, ends) is not None

    async def _drain(
        self, proc: str, iso: str, deadline: float, wait_for: dict[TopicPartition, int] | None
    ) -> dict[TopicPartition, int] | None:
        consumer = self._consumer(iso)
        tps = self._all_partitions()
        try:
            await consumer.assign(tps)
            ends: dict[TopicPartition, int] = {}
            while time.monotonic() < deadline:
                try:
                    ends = await consumer.end_offsets(tps)
                except KetchError:
                    await asyncio.sleep(0.5)
                    continue
                # read_committed: wait until no transaction is open (LSO == the high watermark seen)
                if wait_for is None or all(ends.get(tp, 0) >= wait_for[tp] for tp in tps):
                    break
                await asyncio.sleep(0.5)
            else:
                return None
            for tp in tps:
                await consumer.seek(tp, 0)
            position = {tp: 0 for tp in tps}
            while any(position[tp] < ends.get(tp, 0) for tp in tps) and time.monotonic() < deadline:
                try:
                    batches = await consumer.poll(timeout_ms=500)
                except KetchError:
                    await asyncio.sleep(0.2)
                    continue
                self._record_reads(proc, iso, batches)
                for tp in tps:
                    with contextlib.suppress(Exception):
                        position[tp] = await consumer.position(tp)
            if any(position[tp] < ends.get(tp, 0) for tp in tps):
                return None
            self.history.record("drain", "ok", proc=proc, topics=list(READ_TOPICS))
            return ends
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), 10)


async def close(producer: aio.Producer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.close(2), 10)
