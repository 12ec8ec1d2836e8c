"""A private event loop on a daemon thread, for the sync clients.

Rules:
- Each sync client object owns one ``LoopThread``; the asyncio client it wraps
  is created, used and closed on that loop only (grpc.aio channels belong to
  the loop that created them).
- ``run(coro)`` submits a coroutine and blocks the calling thread for its
  result; calling it from the loop thread itself would deadlock, so it raises.
- ``stop()`` stops the loop and joins the thread; it is idempotent, and the
  thread is a daemon so a forgotten client never keeps the process alive.
- A node's loop and the benchmark tools' (processes Ketch owns) are uvloop's
  where it is installed (a dependency, except on Windows), asyncio's when
  ``KETCH_EVENT_LOOP=asyncio``. grpc.aio runs on any asyncio loop. Measured: a
  node spends ~10% less CPU per record and the client's batch completion ~30%
  less (``bench/``). ``ketch.aio`` runs on the caller's loop;
  ``uvloop.run(main())`` gives it the same.
- A sync client's ``LoopThread`` always runs asyncio's loop: it lives inside the
  user's process, and uvloop there broke the process's own output. With the
  sync consumer on uvloop, ``ketch consume`` writing 10 KB records to a pipe
  lost 4,096 or 8,192 bytes in about one run in ten: the main thread's blocking
  ``write(2)`` returned short (1,813 of 10,005 bytes, fd 1 blocking) and
  ``BufferedWriter`` dropped the rest (4 of 30 runs; 0 of 50 on asyncio's loop;
  CI failure of tests/test_cli_reassign.py, 2026-12-04). What interrupts the
  write is not a signal: with every signal blocked in every thread it still
  happened and nothing was pending. It needs the uvloop loop to be *created*
  on the main thread and run on another: created on its own thread, 0 of 140
  runs wrote short, against 5 of 160 created on the main thread. libuv gives
  every loop an io_uring (to batch epoll_ctl, even with UV_USE_IO_URING=0), and
  io_uring's task-work notification interrupts a blocking pipe write as a
  signal would without being one: consistent with all of this, not proven.
  A library must not change how its host process writes, so the sync clients
  stay off uvloop. (A node and the perf tools create and run their loop on
  their main thread, and write little to pipes: the ready line, progress lines.)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["LoopThread", "loop_factory", "run"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's ``new_event_loop`` where installed and not switched off, else asyncio's."""
    if os.environ.get("KETCH_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()  # never uvloop here: see the module docstring
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def in_loop(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.in_loop():
            coro.close()
            raise RuntimeError("a blocking client call was made on the client's own loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop():
                self._thread.join()
