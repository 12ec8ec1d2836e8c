"""The workload: producers writing unique values and consumers reading to the end.

Rules:
- Producer ``k`` sends ``"p<k>-<seq>"`` (unique in the run) to the topic, at most
  ``in_flight`` sends outstanding, paced to ``rate`` sends per second. Every send is an
  ``invoke`` and exactly one completion in the history (chaos/history.py).
- Outcomes: ``ok`` with the partition and offset; ``fail`` only when the broker
  definitely refused the write before appending it *and* the client did not retry
  (even producers run with ``retries=0`` for that reason, so without idempotence,
  which needs retries; odd ones retry, like a default Kafka producer, and are
  idempotent unless ``idempotence=False``: then a retry can duplicate, the control
  run); everything else is ``unknown``.
- Consumers read every partition from the beginning and record each record read.
  The final drain (``drain``), once the faults are healed, reads every partition
  from offset 0 to its end offset with reader name ``final``.
- Clients dial nodes' real ports: the metadata advertises the proxy ports followers
  use (chaos/cluster.py), and ``direct()`` maps them back on the client's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from chaos.history import History
from ketch import aio
from ketch.errors import ErrorCode, KetchError
from ketch.records import TopicPartition
from ketch.tls import PLAINTEXT, SecurityConfig

# Refused before the append: nothing was written (replication/partition.py checks the ISR
# before appending; LEADER_NOT_AVAILABLE and the others fail before a request is sent or
# before the log is touched). NOT_LEADER_OR_FOLLOWER is *not* here: node/service.py also
# answers it for a write it appended when leadership moved before the write was replicated
# ("the write may or may not survive"), as Kafka does; such a send is ``unknown``.
DEFINITE = frozenset(
    {
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.INVALID_TOPIC_EXCEPTION,
    }
)


def direct(client: Any, real_address: dict[tuple[str, int], tuple[str, int]]) -> Any:
    """Make ``client`` (an aio Producer, Consumer or Admin) dial real node ports."""
    conn = client._conn
    original = conn.stub_at
    conn.stub_at = lambda addr: original(real_address.get(addr, addr))
    return client


async def stop_tasks(stopping: asyncio.Event, tasks: list[asyncio.Task[None]], timeout_s: float) -> None:
    """Ask a workload's tasks to stop, give them ``timeout_s``, cancel the rest, and reap all."""
    stopping.set()
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def classify(exc: BaseException, retries: int) -> str:
    if retries == 0 and isinstance(exc, KetchError) and exc.code in DEFINITE:
        return "fail"
    return "unknown"


class Workload:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        history: History,
        real_address: dict[tuple[str, int], tuple[str, int]],
        *,
        acks: str = "all",
        producers: int = 3,
        consumers: int = 1,
        rate: float = 100.0,
        in_flight: int = 4,
        idempotence: bool = True,
        security: SecurityConfig = PLAINTEXT,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security.client_kwargs()
        self.topic = topic
        self.history = history
        self.real_address = real_address
        self.acks: int | str = 1 if acks in ("1", 1) else acks
        self.producers = producers
        self.consumers = consumers
        self.rate = rate
        self.in_flight = in_flight
        self.idempotence = idempotence
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for k in range(self.producers):
            self.tasks.append(asyncio.create_task(self._produce(k), name=f"producer-{k}"))
        for k in range(self.consumers):
            self.tasks.append(asyncio.create_task(self._consume(k), name=f"consumer-{k}"))

    async def stop(self, timeout_s: float = 30.0) -> None:
        await stop_tasks(self.stopping, self.tasks, timeout_s)

    async def _produce(self, k: int) -> None:
        proc = f"producer-{k}"
        retries = 0 if k % 2 == 0 else 2**31 - 1
        producer = direct(
            aio.Producer(
                self.bootstrap,
                **self.security,
                acks=self.acks,
                linger_ms=2,
                retries=retries,
                enable_idempotence=self.idempotence and retries > 0,
                request_timeout_ms=3000,
                delivery_timeout_ms=10000,
                retry_backoff_ms=100,
                max_block_ms=5000,
            ),
            self.real_address,
        )
        slots = asyncio.Semaphore(self.in_flight)
        pending: set[asyncio.Task[None]] = set()

        async def one(seq: int) -> None:
            value = f"p{k}-{seq:07d}"
            op_id = self.history.next_id()
            self.history.record("send", "invoke", id=op_id, proc=proc, value=value)
            try:
                future = await producer.send(self.topic, value.encode())
                meta = await asyncio.wait_for(future, 30)
            except (KetchError, TimeoutError) as exc:
                kind = classify(exc, retries)
                self.history.record("send", kind, id=op_id, proc=proc, value=value, error=f"{exc!r}"[:200])
                await asyncio.sleep(0.05)
            except Exception as exc:  # anything else is still an outcome we do not know
                self.history.record("send", "unknown", id=op_id, proc=proc, value=value, error=f"{exc!r}"[:200])
            else:
                self.history.record(
                    "send", "ok", id=op_id, proc=proc, value=value, partition=meta.partition, offset=meta.offset
                )
            finally:
                slots.release()

        try:
            await producer.start()
            seq = 0
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self.stopping.is_set():
                await slots.acquire()
                task = asyncio.create_task(one(seq))
                pending.add(task)
                task.add_done_callback(pending.discard)
                seq += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_at = time.monotonic()
            if pending:
                await asyncio.wait(pending, timeout=40)
        finally:
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.close(5), 10)

    async def _partitions(self, consumer: aio.Consumer) -> list[TopicPartition]:
        for _ in range(100):
            with contextlib.suppress(KetchError):
                parts = await consumer.partitions_for_topic(self.topic)
                if parts:
                    return [TopicPartition(self.topic, p) for p in sorted(parts)]
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no partitions for {self.topic}")

    async def _consume(self, k: int) -> None:
        proc = f"consumer-{k}"
        consumer = direct(
            aio.Consumer(
                bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=200, **self.security
            ),
            self.real_address,
        )
        try:
            await consumer.assign(await self._partitions(consumer))
            while not self.stopping.is_set():
                try:
                    batches = await consumer.poll(timeout_ms=200)
                except KetchError as exc:
                    self.history.record("read", "error", proc=proc, error=f"{exc!r}"[:200])
                    await asyncio.sleep(0.2)
                    continue
                for records in batches.values():
                    for r in records:
                        value = (r.value or b"").decode(errors="replace")
                        self.history.record(
                            "read", "ok", proc=proc, partition=r.partition, offset=r.offset, value=value
                        )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), 10)

    async def drain(self, timeout_s: float = 60.0) -> bool:
        """Read every partition from 0 to its end offset as reader ``final``; True if complete."""
        consumer = direct(
            aio.Consumer(
                bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=200, **self.security
            ),
            self.real_address,
        )
        deadline = time.monotonic() + timeout_s
        try:
            tps = await self._partitions(consumer)
            await consumer.assign(tps)
            ends: dict[TopicPartition, int] = {}
            while time.monotonic() < deadline:
                try:
                    ends = await consumer.end_offsets(tps)
                    break
                except KetchError:
                    await asyncio.sleep(0.5)
            for tp in tps:
                await consumer.seek(tp, 0)
            seen = {tp: 0 for tp in tps}
            while any(seen[tp] < ends.get(tp, 0) for tp in tps) and time.monotonic() < deadline:
                try:
                    batches = await consumer.poll(timeout_ms=500)
                except KetchError:
                    await asyncio.sleep(0.2)
                    continue
                for tp, records in batches.items():
                    for r in records:
                        value = (r.value or b"").decode(errors="replace")
                        self.history.record(
                            "read", "ok", proc="final", partition=r.partition, offset=r.offset, value=value
                        )
                        seen[tp] = r.offset + 1
            return bool(ends) and all(seen[tp] >= ends.get(tp, 0) for tp in tps)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), 10)
