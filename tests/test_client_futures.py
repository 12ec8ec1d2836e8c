"""FutureRecordMetadata behaves as a concurrent.futures.Future for every standard use."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from ketch._future import BatchResult, FutureRecordMetadata, finish_all
from ketch.errors import MessageTooLargeError
from ketch.records import RecordMetadata


def batch(n: int) -> tuple[threading.Condition, list[FutureRecordMetadata]]:
    cond = threading.Condition()
    futures = [FutureRecordMetadata() for _ in range(n)]
    for i, f in enumerate(futures):
        f._condition = cond
        f._index = i
    return cond, futures


def test_is_a_concurrent_future_that_cannot_be_cancelled() -> None:
    _, (f,) = batch(1)
    assert isinstance(f, concurrent.futures.Future)
    assert f.running() and not f.done()
    assert f.cancel() is False and not f.cancelled()
    with pytest.raises(concurrent.futures.TimeoutError):
        f.result(timeout=0.01)


def test_results_callbacks_wait_and_as_completed() -> None:
    cond, futures = batch(3)
    seen: list[RecordMetadata] = []
    futures[1].add_callback(seen.append)
    errors: list[BaseException] = []
    futures[2].add_errback(errors.append)
    results: list[RecordMetadata] = []
    waiter = threading.Thread(target=lambda: results.append(futures[2].get(5)))
    waiter.start()
    threading.Timer(0.05, lambda: finish_all(cond, futures, BatchResult("t", 1, 40, [7, 8, 9]), None)).start()
    done, not_done = concurrent.futures.wait(futures, timeout=5)
    waiter.join()
    assert len(done) == 3 and not not_done
    expected = [RecordMetadata("t", 1, 40 + i, 7 + i) for i in range(3)]
    completed: list[concurrent.futures.Future[RecordMetadata]] = list(
        concurrent.futures.as_completed(list[concurrent.futures.Future[RecordMetadata]](futures))
    )
    assert sorted(f.result().offset for f in completed) == [40, 41, 42]
    assert [f.result() for f in futures] == expected
    assert seen == [expected[1]] and results == [expected[2]] and errors == []
    # a callback added after completion runs at once
    late: list[RecordMetadata] = []
    futures[0].add_callback(late.append)
    assert late == [expected[0]]


def test_failure_reaches_result_exception_and_errback() -> None:
    cond, futures = batch(2)
    errors: list[BaseException] = []
    futures[0].add_errback(errors.append)
    err = MessageTooLargeError("too big")
    finish_all(cond, futures, None, err)
    assert futures[1].exception() is err
    with pytest.raises(MessageTooLargeError):
        futures[0].get(0)
    assert errors == [err]


def test_acks_zero_offsets_are_minus_one_and_standalone_futures_work() -> None:
    cond, futures = batch(2)
    finish_all(cond, futures, BatchResult("t", 0, -1, [1, 2]), None)
    assert [f.result().offset for f in futures] == [-1, -1]
    alone = FutureRecordMetadata()  # never joined a batch: failed before append
    alone.set_exception(ValueError("bad"))
    assert isinstance(alone.exception(), ValueError)


def test_shared_condition_never_wakes_a_waiter_early() -> None:
    cond, futures = batch(50)
    outcomes: list[object] = []

    def wait(f: FutureRecordMetadata) -> None:
        try:
            outcomes.append(f.result(timeout=5))
        except Exception as e:  # a spurious wake-up would surface as TimeoutError
            outcomes.append(e)

    threads = [threading.Thread(target=wait, args=(f,)) for f in futures]
    for th in threads:
        th.start()
    time.sleep(0.05)
    finish_all(cond, futures, BatchResult("t", 0, 0, list(range(50))), None)
    for th in threads:
        th.join()
    assert all(isinstance(o, RecordMetadata) for o in outcomes) and len(outcomes) == 50
