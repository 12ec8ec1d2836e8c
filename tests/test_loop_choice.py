"""Which event loop Ketch runs where (ketch/_loop.py): uvloop in the processes Ketch owns, never in
a sync client's thread inside the user's process (uvloop there cost ``ketch consume`` bytes of its
own piped output; the module docstring has the evidence)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

import ketch
from ketch import _loop


def test_sync_client_loop_thread_runs_asyncio_even_with_uvloop_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETCH_EVENT_LOOP", raising=False)
    assert _loop.loop_factory() is uvloop.new_event_loop  # uvloop is installed and not switched off
    thread = _loop.LoopThread("test-loop")
    try:
        assert not isinstance(thread.loop, uvloop.Loop)

        async def running_loop() -> asyncio.AbstractEventLoop:
            return asyncio.get_running_loop()

        assert type(thread.run(running_loop())) is type(asyncio.new_event_loop())
    finally:
        thread.stop()


def test_sync_producer_thread_is_not_uvloop() -> None:
    """The blocking Producer owns a LoopThread; nothing is sent, so no broker is needed."""
    producer = ketch.Producer("127.0.0.1:1", max_block_ms=100)
    try:
        assert not isinstance(producer._loop.loop, uvloop.Loop)
    finally:
        producer.close(0)


def test_owned_processes_use_uvloop_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETCH_EVENT_LOOP", raising=False)
    assert _loop.run(_running_loop_type()) is uvloop.Loop
    monkeypatch.setenv("KETCH_EVENT_LOOP", "asyncio")
    assert _loop.loop_factory() is asyncio.new_event_loop
    assert _loop.run(_running_loop_type()) is not uvloop.Loop


async def _running_loop_type() -> type:
    return type(asyncio.get_running_loop())
