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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from coordinator.metadata import MetadataDelta, MetadataImage
from coordinator.metadata.snapshot import image_from_records
from ketch.api.v1 import controller_pb2 as cpb
from node.controller_client import ControllerClient

log = logging.getLogger("ketch.node.metadata")
OnChange = Callable[[MetadataImage, MetadataImage], None]


class MetadataFollower:
    def __init__(
        self, broker_id: int, controllers: ControllerClient, on_change: OnChange, prefer: int | None = None
    ) -> None:
        self.broker_id = broker_id
        self.image = MetadataImage()
        self._controllers = controllers
        self._on_change = on_change
        self._prefer = prefer
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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

    async def _run(self) -> None:
        order = sorted(self._controllers.voters)
        target = self._prefer if self._prefer in self._controllers.voters else order[0]
        while True:
            try:
                stream = self._controllers.stub(target).FetchMetadata(
                    cpb.FetchMetadataRequest(broker_id=self.broker_id, offset=self.image.offset)
                )
                async for update in stream:
                    self.apply(update)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("metadata stream from node %d ended: %s", target, exc.code().name)
            except Exception:
                log.exception("metadata stream from node %d failed", target)
            target = order[(order.index(target) + 1) % len(order)] if self._prefer is None else target
            await asyncio.sleep(0.2)
