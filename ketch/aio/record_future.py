"""``RecordFuture``: the asyncio producer's per-record future, completed a batch at a time.

A plain ``asyncio.Future`` schedules each done-callback with its own
``loop.call_soon`` when it completes: one ``Handle`` and one pass of the
event loop per record, about 2 us of the producer's 8-10 us per record at
100 B (measured on this project's 2-core machine, ``bench/produce.py``'s
callback per record). This subclass keeps everything an ``asyncio.Future``
is (``isinstance``, ``await``, ``asyncio.gather``/``wait``/``wait_for``,
``result``/``exception``, cancellation, "exception was never retrieved"
logging: the C future holds the state) and changes only where callbacks wait:

- A callback added while the future is pending goes into the future's own
  list, not the C future's. ``finish_records`` completes a batch's futures
  (record order) and runs all their callbacks from ONE ``call_soon``: in
  order, each in its context, as asyncio would, and an exception in one is
  passed to the loop's exception handler without stopping the others.
- A callback added once the future is done, and the callbacks of a future
  completed one at a time (``set_result``, ``set_exception``, ``cancel``: the
  producer's own refusals, a caller's cancel) are scheduled as asyncio does.
- A task awaiting the future registers its wake-up through
  ``add_done_callback`` (asyncio's protocol for Future subclasses), so it is
  woken with the batch too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Any

from ketch.records import RecordMetadata

__all__ = ["RecordFuture", "finish_records"]

Callback = Callable[["RecordFuture"], object]
_set_result = asyncio.Future.set_result
_set_exception = asyncio.Future.set_exception


class RecordFuture(asyncio.Future[RecordMetadata]):
    """One record's delivery: resolves to ``RecordMetadata`` or raises the error."""

    # The first pending callback and its context sit in two slots, the rest in a list: a record
    # in flight adds no container object for the garbage collector to walk (see the docstring).
    __slots__ = ("_callback", "_callback_context", "_more_callbacks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._callback: Callback | None = None
        self._callback_context: contextvars.Context | None = None
        self._more_callbacks: list[tuple[Callback, contextvars.Context | None]] | None = None

    def add_done_callback(self, fn: Callback, *, context: contextvars.Context | None = None) -> None:
        if self.done():
            super().add_done_callback(fn, context=context)
            return
        if context is None:
            context = contextvars.copy_context()
            if not len(context):
                context = None  # empty: a fresh empty context at run time is the same, and is not kept
        if self._callback is None:
            self._callback = fn
            self._callback_context = context
        elif self._more_callbacks is None:
            self._more_callbacks = [(fn, context)]
        else:
            self._more_callbacks.append((fn, context))

    def remove_done_callback(self, fn: Callback) -> int:
        callbacks = _take_callbacks(self)
        kept = [(f, ctx) for f, ctx in callbacks if f != fn]
        for f, ctx in kept:
            self.add_done_callback(f, context=ctx if ctx is not None else contextvars.Context())
        return super().remove_done_callback(fn) + len(callbacks) - len(kept)

    def set_result(self, result: RecordMetadata) -> None:
        super().set_result(result)
        self._schedule_callbacks()

    def set_exception(self, exception: type[BaseException] | BaseException) -> None:
        super().set_exception(exception)
        self._schedule_callbacks()

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg):
            return False
        self._schedule_callbacks()
        return True

    def _schedule_callbacks(self) -> None:
        if self._callback is not None:
            self.get_loop().call_soon(_run_callbacks, (self,))


def finish_records(
    futures: Sequence[asyncio.Future[RecordMetadata]],
    results: Sequence[RecordMetadata] | None,
    exc: BaseException | None,
) -> None:
    """Complete ``futures`` (one batch's, in record order) with ``results`` (one each) or with
    ``exc``; the ``RecordFuture`` callbacks among them run from one ``call_soon``.

    A future already done (cancelled by its caller) is skipped.
    """
    ready: list[RecordFuture] = []
    for i, fut in enumerate(futures):
        if fut.done():
            continue
        if results is not None:
            _set_result(fut, results[i])
        else:
            assert exc is not None
            _set_exception(fut, exc)
        if type(fut) is RecordFuture and fut._callback is not None:
            ready.append(fut)
    if ready:
        ready[0].get_loop().call_soon(_run_callbacks, ready)


def _take_callbacks(fut: RecordFuture) -> list[tuple[Callback, contextvars.Context | None]]:
    """Remove and return ``fut``'s pending callbacks, in the order they were added."""
    callbacks = [] if fut._callback is None else [(fut._callback, fut._callback_context)]
    callbacks.extend(fut._more_callbacks or ())
    fut._callback = fut._callback_context = fut._more_callbacks = None
    return callbacks


def _run_callbacks(futures: Sequence[RecordFuture]) -> None:
    for fut in futures:
        for fn, context in _take_callbacks(fut):
            try:
                (context if context is not None else contextvars.Context()).run(fn, fut)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as asyncio's Handle does
                fut.get_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc, "future": fut}
                )
