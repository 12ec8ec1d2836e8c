"""MetadataFollower: a broker follows the committed metadata log into its image.

The broker streams FetchMetadata from a controller (its own, in combined
mode, else any voter), starting after the offset of the image it holds. Each
update becomes a delta over the current image; the new immutable image
replaces the old one and ``on_change(old, new)`` runs, so the replica manager
acts only on changes to this broker's own replicas (``local_changes``).

Rules:
- The image offset only grows; an update at or below it is ignored (a
  reconnect may resend), and a snapshot replaces the image only when it is
  newer.
- On a stream error it reconnects to the next controller after a short
  backoff, asking again from its current offset; nothing is lost or applied
  twice.
- ``wait_for(offset)`` lets a request handler wait until the image has
  reached the offset a controller command answered with (read-your-writes
  for CreateTopics and DeleteTopics).
- A stalled stream is left (``StallWatch``): every answer of the active
  controller (heartbeats, controlled shutdown) says how far the metadata log
  has committed (``committed(offset)``). If the image stays below such an
  offset for ``stall_ms`` (a second or two heartbeats), the controller it
  streams from is behind the quorum or stuck (a combined node's own
  controller cut off from the others, or failed), and the follower moves to
  the active controller (or, if it already streams from it, the next voter).
  A combined node's broker still prefers its own controller at start, so
  the common case costs no network hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc

from coordinator.metadata import MetadataDelta, MetadataImage
from coordinator.metadata.snapshot import image_from_records
from ketch.api.v1 import controller_pb2 as cpb
from node.controller_client import ControllerClient

log = logging.getLogger("ketch.node.metadata")
OnChange = Callable[[MetadataImage, MetadataImage], None]
STALL_CHECK_S = 0.1


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class StallWatch:
    """Is the image stuck below an offset the quorum has committed? Pure: offsets and ``now_ms`` in.

    ``report(committed, image_offset, now_ms)`` notes an offset the active controller answered with;
    while the image is below it the clock runs from the first such report. ``stalled(image_offset,
    now_ms)`` is True once it has stayed below that offset for more than ``stall_ms``; reaching it
    clears the watch. ``reset()`` after moving to another controller starts afresh.
    """

    def __init__(self, stall_ms: int) -> None:
        self.stall_ms = stall_ms
        self._target: int | None = None
        self._since = 0

    def report(self, committed: int, image_offset: int, now_ms: int) -> None:
        if image_offset >= committed or self._target is not None:
            return
        self._target, self._since = committed, now_ms

    def stalled(self, image_offset: int, now_ms: int) -> bool:
        if self._target is None:
            return False
        if image_offset >= self._target:
            self._target = None
            return False
        return now_ms - self._since > self.stall_ms

    def reset(self) -> None:
        self._target = None


class MetadataFollower:
    def __init__(
        self,
        broker_id: int,
        controllers: ControllerClient,
        on_change: OnChange,
        prefer: int | None = None,
        stall_ms: int = 1000,
    ) -> None:
        self.broker_id = broker_id
        self.image = MetadataImage()
        self._controllers = controllers
        self._on_change = on_change
        self._prefer = prefer
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch = StallWatch(stall_ms)
        self.source = -1  # the controller streamed from

    def committed(self, offset: int) -> None:
        """The active controller answered with ``offset``: the metadata log has committed that far."""
        self._watch.report(offset, self.image.offset, _now_ms())

    async def _until_stalled(self) -> None:
        while not self._watch.stalled(self.image.offset, _now_ms()):
            await asyncio.sleep(STALL_CHECK_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metadata-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _set(self, image: MetadataImage) -> None:
        old, self.image = self.image, image
        try:
            self._on_change(old, image)
        except Exception:
            log.exception("applying metadata offset %d failed", image.offset)
        event, self._advanced = self._advanced, asyncio.Event()
        event.set()

    async def wait_for(self, offset: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.image.offset < offset:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def apply(self, update: cpb.MetadataUpdate) -> None:
        if update.HasField("snapshot"):
            if update.snapshot.offset > self.image.offset:
                self._set(image_from_records(update.snapshot.offset, list(update.snapshot.records)))
            return
        entry = update.entry
        if entry.offset <= self.image.offset:
            return
        delta = MetadataDelta(self.image)
        delta.replay_batch(entry.offset, list(entry.batch.records))
        self._set(delta.apply())

    async def _stream(self, target: int) -> None:
        try:
            stream = self._controllers.stub(target).FetchMetadata(
                cpb.FetchMetadataRequest(broker_id=self.broker_id, offset=self.image.offset)
            )
            async for update in stream:
                self.apply(update)
        except grpc.aio.AioRpcError as exc:
            log.debug("metadata stream from node %d ended: %s", target, exc.code().name)
        except Exception:
            log.exception("metadata stream from node %d failed", target)

    async def _run(self) -> None:
        target = self._prefer if self._prefer in self._controllers.voters else sorted(self._controllers.voters)[0]
        while True:
            self.source = target
            reading = asyncio.create_task(self._stream(target))
            leaving = asyncio.create_task(self._until_stalled())
            try:
                await asyncio.wait({reading, leaving}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reading, leaving):
                    task.cancel()
                await asyncio.gather(reading, leaving, return_exceptions=True)
            order = sorted(self._controllers.voters)
            after = order[(order.index(target) + 1) % len(order)] if target in order else order[0]
            if leaving.done() and not leaving.cancelled():
                active = self._controllers.leader_guess
                new = active if active != target and active in self._controllers.voters else after
                log.warning(
                    "metadata stream from node %d stalled at offset %d; following node %d",
                    target,
                    self.image.offset,
                    new,
                )
                self._watch.reset()
                target = new
                continue
            if self._prefer is None or self._prefer != target:
                target = after
            await asyncio.sleep(0.2)
