"""RecordFuture behaves as an asyncio.Future for every standard use, and completes a batch at once."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ketch.aio.accumulator import RECORD_OVERHEAD, Accumulator
from ketch.aio.connection import PartitionInfo, TopicInfo
from ketch.aio.record_future import RecordFuture, finish_records
from ketch.errors import KetchError
from ketch.records import RecordMetadata

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def in_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run the coroutine test function on a fresh event loop."""

    def run() -> None:
        asyncio.run(test())

    run.__name__ = test.__name__
    return run


def metadata(n: int) -> list[RecordMetadata]:
    return [RecordMetadata("t", 0, 10 + i, 1000 + i) for i in range(n)]


@in_a_loop
async def test_awaited_gathered_and_waited_like_an_asyncio_future() -> None:
    loop = asyncio.get_running_loop()
    futures = [RecordFuture(loop) for _ in range(3)]
    assert all(isinstance(f, asyncio.Future) and not f.done() for f in futures)
    gathered = asyncio.ensure_future(asyncio.gather(*futures))
    waited = asyncio.ensure_future(asyncio.wait(futures))
    awaited = asyncio.ensure_future(asyncio.wait_for(futures[1], 5))
    await asyncio.sleep(0)
    finish_records(futures, metadata(3), None)
    assert await gathered == metadata(3)
    done, pending = await waited
    assert done == set(futures) and not pending
    assert await awaited == metadata(3)[1]
    assert [await f for f in futures] == metadata(3)


@in_a_loop
async def test_a_batch_runs_its_callbacks_in_order_from_one_loop_callback() -> None:
    loop = asyncio.get_running_loop()
    futures = [RecordFuture(loop) for _ in range(4)]
    seen: list[tuple[int, int]] = []

    def record(i: int) -> Callable[[asyncio.Future[RecordMetadata]], None]:
        return lambda fut: seen.append((i, fut.result().offset))

    for i, f in enumerate(futures):
        f.add_done_callback(record(i))
    futures[2].add_done_callback(lambda fut: seen.append((-2, fut.result().offset)))
    scheduled: list[Any] = []
    call_soon = loop.call_soon

    def counting_call_soon(callback: Any, *args: Any, **kwargs: Any) -> Any:
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)

    loop.call_soon = counting_call_soon  # type: ignore[method-assign,assignment]
    try:
        finish_records(futures, metadata(4), None)
    finally:
        loop.call_soon = call_soon  # type: ignore[method-assign]
    assert len(scheduled) == 1  # one Handle for the batch, not one per record
    assert seen == []  # callbacks run from the loop, never inside finish_records
    await asyncio.sleep(0)
    assert seen == [(0, 10), (1, 11), (2, 12), (-2, 12), (3, 13)]


@in_a_loop
async def test_callbacks_run_in_the_context_they_were_added_in_each_its_own() -> None:
    loop = asyncio.get_running_loop()
    futures = [RecordFuture(loop) for _ in range(3)]
    seen: list[str] = []

    def record_and_overwrite(fut: asyncio.Future[RecordMetadata]) -> None:
        seen.append(VAR.get())
        VAR.set("overwritten by a callback")

    futures[0].add_done_callback(record_and_overwrite)  # empty context
    token = VAR.set("set before add")
    futures[1].add_done_callback(record_and_overwrite)
    VAR.reset(token)
    futures[2].add_done_callback(record_and_overwrite)
    futures[2].add_done_callback(record_and_overwrite)
    finish_records(futures, metadata(3), None)
    await asyncio.sleep(0)
    assert seen == ["unset", "set before add", "unset", "unset"]
    assert VAR.get() == "unset"


@in_a_loop
async def test_failure_cancel_and_a_raising_callback() -> None:
    loop = asyncio.get_running_loop()
    futures = [RecordFuture(loop) for _ in range(3)]
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    seen: list[str] = []
    futures[0].add_done_callback(lambda f: 1 / 0)
    futures[0].add_done_callback(lambda f: seen.append(type(f.exception()).__name__))
    futures[1].add_done_callback(lambda f: seen.append("cancelled" if f.cancelled() else "not cancelled"))
    assert futures[1].cancel()
    await asyncio.sleep(0)
    assert seen == ["cancelled"]
    finish_records(futures, None, KetchError("broker said no"))  # the cancelled one is skipped
    await asyncio.sleep(0)
    assert seen == ["cancelled", "KetchError"]
    assert [type(e["exception"]) for e in errors] == [ZeroDivisionError]
    assert futures[1].cancelled() and not futures[1].cancel()
    with pytest.raises(KetchError, match="broker said no"):
        await futures[2]
    loop.set_exception_handler(None)


@in_a_loop
async def test_wait_for_times_out_and_cancels_a_pending_record() -> None:
    loop = asyncio.get_running_loop()
    fut = RecordFuture(loop)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fut, 0.01)
    assert fut.cancelled()
    finish_records([fut], metadata(1), None)  # its batch lands later: nothing to complete
    assert fut.cancelled()


@in_a_loop
async def test_removed_callbacks_do_not_run_and_late_ones_do() -> None:
    loop = asyncio.get_running_loop()
    fut = RecordFuture(loop)
    seen: list[str] = []

    def a(f: asyncio.Future[RecordMetadata]) -> None:
        seen.append("a")

    def b(f: asyncio.Future[RecordMetadata]) -> None:
        seen.append("b")

    fut.add_done_callback(a)
    fut.add_done_callback(b)
    fut.add_done_callback(a)
    assert fut.remove_done_callback(a) == 2
    fut.set_result(metadata(1)[0])
    fut.add_done_callback(a)  # added once done: scheduled as asyncio does
    await asyncio.sleep(0)
    assert seen == ["b", "a"]


def test_buffer_memory_counts_what_a_queued_record_really_takes() -> None:
    """``RECORD_OVERHEAD`` covers the producer's own objects per record (future, timestamp, list slots,
    batch bytes): with it, ``buffer_memory`` bounds the records alive, and so the garbage collector's work."""

    async def queued_bytes(records: int) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        info = TopicInfo.make("t", 0, "", "", {0: PartitionInfo(0, 1, 0, (1,), (1,))})
        acc = Accumulator(batch_size=1 << 20, linger_ms=60000)
        value = b"v" * 100
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        futures = []

        def delivered(fut: asyncio.Future[RecordMetadata]) -> None:
            pass

        for _ in range(records):
            fut = RecordFuture(loop)
            fut.add_done_callback(delivered)
            acc.append(info, None, None, value, [], None, fut)
            futures.append(fut)  # the caller keeps its futures, as the producer's users do
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used - records * 8, acc.buffered_bytes  # less the caller's own list of them

    used, charged = asyncio.run(queued_bytes(5000))
    assert used <= charged, f"{used} bytes used, {charged} charged ({RECORD_OVERHEAD} per record)"
    assert charged <= 2 * used  # and not wildly more
