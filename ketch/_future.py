"""``FutureRecordMetadata``: a ``concurrent.futures.Future`` cheap enough per record.

A plain ``concurrent.futures.Future`` builds a ``threading.Condition`` (an
RLock, a deque and five bound methods) and two lists per instance; at 100k+
records/s that creation, its completion and the garbage collector's passes
over the live ones cost more than the rest of ``send()`` together (measured:
send loop 62k/s with plain futures, 130k/s+ with these). This subclass keeps
the standard class (``isinstance``, ``result``, ``done``,
``add_done_callback``, ``concurrent.futures.wait``/``as_completed`` all work)
and changes only how its state is held:

- All futures of one producer batch share one condition, given by the batch
  when the record is appended. They complete together under it in
  ``finish_all``: every state is set before the single ``notify_all``, so a
  woken waiter always finds its own future finished.
- A future starts RUNNING (the record is on its way), so ``cancel()`` returns
  False, as in kafka-python; only completion can wake a waiter.
- The waiter and callback lists are created on first use, and the
  ``RecordMetadata`` is built when first asked for, from the batch's shared
  ``BatchResult`` and the record's index in the batch.

It relies on ``concurrent.futures.Future``'s private attributes (``_condition``,
``_state``, ``_result``, ``_exception``, ``_waiters``, ``_done_callbacks``,
``__get_result``), unchanged from Python 3.8 to 3.13;
``tests/test_client_futures.py`` checks the standard functions against it.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from concurrent.futures._base import FINISHED, RUNNING
from typing import Any

from ketch.records import RecordMetadata

__all__ = ["BatchResult", "FutureRecordMetadata", "finish_all"]


class BatchResult:
    """Where a batch landed; each record's metadata derives from it."""

    __slots__ = ("base_offset", "partition", "timestamps", "topic")

    def __init__(self, topic: str, partition: int, base_offset: int, timestamps: Sequence[int]) -> None:
        self.topic = topic
        self.partition = partition
        self.base_offset = base_offset
        self.timestamps = timestamps

    def metadata(self, index: int) -> RecordMetadata:
        offset = self.base_offset + index if self.base_offset >= 0 else -1
        return RecordMetadata(self.topic, self.partition, offset, self.timestamps[index])


class FutureRecordMetadata(concurrent.futures.Future[RecordMetadata]):
    """A record's delivery: resolves to ``RecordMetadata`` or raises the error."""

    _w: list[Any] | None = None
    _cb: list[Callable[[Any], object]] | None = None
    _batch: BatchResult | None = None
    _index = 0

    def __init__(self) -> None:  # no super().__init__(): see the module docstring
        self._condition: Any = None
        self._state = RUNNING
        self._result: RecordMetadata | None = None
        self._exception: BaseException | None = None

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        if self._w is None:
            self._w = []
        return self._w

    @property
    def _done_callbacks(self) -> list[Callable[[Any], object]]:
        if self._cb is None:
            self._cb = []
        return self._cb

    def _Future__get_result(self) -> RecordMetadata:  # the base class's private __get_result
        if self._exception is not None:
            raise self._exception
        if self._result is None and self._batch is not None:
            self._result = self._batch.metadata(self._index)
        assert self._result is not None
        return self._result

    def _own_condition(self) -> None:
        if self._condition is None:
            self._condition = threading.Condition()

    def set_result(self, result: RecordMetadata) -> None:
        self._own_condition()
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        self._own_condition()
        super().set_exception(exception)

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """kafka-python's name for ``result``."""
        return self.result(timeout)

    def add_callback(self, fn: Callable[[RecordMetadata], Any]) -> FutureRecordMetadata:
        self.add_done_callback(lambda f: None if f.exception() else fn(f.result()))
        return self

    def add_errback(self, fn: Callable[[BaseException], Any]) -> FutureRecordMetadata:
        self.add_done_callback(lambda f: fn(exc) if (exc := f.exception()) is not None else None)
        return self


def finish_all(
    condition: threading.Condition,
    futures: Sequence[Any],
    result: BatchResult | None,
    exc: BaseException | None,
) -> None:
    """Complete the batch's ``FutureRecordMetadata`` under their shared condition.

    Other futures in ``futures`` are skipped (the caller completes them).
    Done-callbacks run after the condition is released, in record order.
    """
    callbacks = False
    with condition:
        for f in futures:
            if type(f) is not FutureRecordMetadata or f._state != RUNNING:
                continue
            if result is not None:
                f._batch = result
            else:
                f._exception = exc
            f._state = FINISHED
            if f._w:
                for waiter in f._w:
                    if result is not None:
                        waiter.add_result(f)
                    else:
                        waiter.add_exception(f)
            if f._cb:
                callbacks = True
        condition.notify_all()
    if callbacks:
        for f in futures:
            if type(f) is FutureRecordMetadata and f._cb:
                f._invoke_callbacks()  # type: ignore[attr-defined]
