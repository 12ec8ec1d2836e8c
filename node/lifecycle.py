"""BrokerLifecycle: registration, heartbeats and controlled shutdown (KIP-631).

Rules:
- At start a broker registers with the active controller under a fresh
  incarnation id (one per process start); the answer's broker epoch (the
  metadata offset of the registration) goes into every heartbeat. A new
  registration fences the previous incarnation of the same id. It says
  whether the previous process on this data directory shut down cleanly
  (node/clean_shutdown.py) and reports every local replica's (latest epoch,
  log end); after an unclean stop the controller takes it out of the ISRs
  (KIP-966). Once a registration succeeded, a later one by the same process
  (after STALE_BROKER_EPOCH) says clean: the process has lost nothing since.
- Heartbeats report the log ends of local replicas whose partition is in
  unclean recovery (coordinator/metadata/recovery.py).
- ``report_unreachable(id)`` (the replica fetcher's fetch from leader ``id``
  failed with UNAVAILABLE) sends the next heartbeat at once, naming ``id``:
  the controller probes it without waiting for its silence
  (coordinator/quorum.py). A broker is named at most once per heartbeat
  interval, so a leader that stays unreachable costs one early heartbeat an
  interval, not one per retried fetch.
- It heartbeats every ``broker_heartbeat_interval_ms`` with its epoch and the
  offset of its metadata image. The controller unfences it once the image
  has caught up to its registration, and fences it when heartbeats stop for
  ``broker_session_timeout_ms`` (leaders move to other ISR members).
- STALE_BROKER_EPOCH or BROKER_ID_NOT_REGISTERED (its registration was
  replaced, or the controller lost it) → register again.
- Every answer of the active controller tells the metadata follower how far the
  log has committed (``MetadataFollower.committed``), so a follower whose
  stream stalled moves to another controller.
- Controlled shutdown (SIGTERM): ask the controller to move this broker's
  leaderships away and fence it, and wait until this broker's image shows it
  — so clients are redirected before the process exits. Bounded by a
  timeout: a controller that cannot be reached does not block the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

from coordinator.metadata import TopicIdPartition
from coordinator.metadata.records import Endpoint
from ketch.api.v1 import controller_pb2 as cpb
from ketch.errors import ErrorCode
from node.config import NodeConfig
from node.controller_client import ControllerClient
from node.metadata_follower import MetadataFollower

log = logging.getLogger("ketch.node.lifecycle")
REREGISTER = {ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED}


class BrokerEpoch:
    """This process's broker epoch: the metadata offset of its current registration, -1 while
    it has none (before the first one, and after the controller asked it to register again).

    One holder, made before everything that reads it, so no reader needs the lifecycle: the
    lifecycle sets ``value``; the replica manager (applies the image only from the
    registration on), the replica fetcher (sends it with every Fetch) and the ISR manager
    (with every AlterPartition) read it.
    """

    def __init__(self) -> None:
        self.value = -1


def _reports(logs: Mapping[TopicIdPartition, tuple[int, int]]) -> list[cpb.ReplicaLogReport]:
    return [
        cpb.ReplicaLogReport(topic_id=tp.topic_id, partition=tp.partition, latest_epoch=epoch, log_end_offset=end)
        for tp, (epoch, end) in sorted(logs.items())
    ]


class BrokerLifecycle:
    def __init__(
        self,
        config: NodeConfig,
        controllers: ControllerClient,
        follower: MetadataFollower,
        epoch: BrokerEpoch,
        advertised: tuple[str, int],
        on_registered: Callable[[], None] = lambda: None,
        *,
        previous_clean_shutdown: bool = False,
        replica_logs: Callable[[bool], Mapping[TopicIdPartition, tuple[int, int]]] = lambda _: {},
        endpoints: Sequence[Endpoint] = (),
    ) -> None:
        self._endpoints = list(endpoints)  # every advertised listener; ``advertised`` is the inter-broker one
        self._on_registered = on_registered
        self._clean = previous_clean_shutdown
        self._replica_logs = replica_logs
        self.config = config
        self.controllers = controllers
        self.follower = follower
        self._advertised = advertised
        self.epoch = epoch
        self.incarnation_id = uuid.uuid4().hex
        self.fenced = True
        self._task: asyncio.Task[None] | None = None
        self._unreachable: set[int] = set()  # to name in the next heartbeat
        self._named_at: dict[int, float] = {}  # broker id -> when last named (loop time)
        self._heartbeat_now = asyncio.Event()

    def report_unreachable(self, broker_id: int) -> None:
        """This broker could not reach ``broker_id``'s listener: name it in a heartbeat sent now,
        unless it was named within the last heartbeat interval."""
        now = asyncio.get_running_loop().time()
        if now - self._named_at.get(broker_id, -1e9) < self.config.broker_heartbeat_interval_ms / 1000:
            return
        self._named_at[broker_id] = now
        self._unreachable.add(broker_id)
        self._heartbeat_now.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broker-lifecycle")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _register(self) -> None:
        host, port = self._advertised
        request = cpb.RegisterBrokerRequest(
            broker_id=self.config.node_id,
            incarnation_id=self.incarnation_id,
            host=host,
            port=port,
            rack=self.config.rack,
            previous_clean_shutdown=self._clean,
            replica_logs=_reports(self._replica_logs(False)),
        )
        for e in self._endpoints:
            request.endpoints.add(name=e.name, host=e.host, port=e.port, security_protocol=e.security_protocol)
        response = await self.controllers.call(lambda s: s.RegisterBroker, request)
        if response.status.error_code:
            raise RuntimeError(f"registration refused: {response.status.error_message}")
        self.epoch.value = response.broker_epoch
        self._clean = True  # a later re-registration by this process has lost nothing since this one
        log.info("broker %d registered with epoch %d", self.config.node_id, self.epoch.value)
        self._on_registered()

    async def _heartbeat(self) -> None:
        request = cpb.BrokerHeartbeatRequest(
            broker_id=self.config.node_id,
            broker_epoch=self.epoch.value,
            metadata_offset=self.follower.image.offset,
            replica_logs=_reports(self._replica_logs(True)),
            unreachable_brokers=sorted(self._unreachable),
        )
        self._unreachable.clear()
        # An attempt gets two intervals (1 s by default): a paused controller must not hold the heartbeat
        # past the session; the next voter is asked instead (controller_client.py).
        attempt = 2 * self.config.broker_heartbeat_interval_ms / 1000
        response = await self.controllers.call(
            lambda s: s.BrokerHeartbeat,
            request,
            timeout_s=self.config.broker_session_timeout_ms / 1000,
            attempt_timeout_s=attempt,
        )
        code = response.status.error_code
        if code in REREGISTER:
            log.warning("broker %d: %s; registering again", self.config.node_id, response.status.error_message)
            self.epoch.value = -1
            self.incarnation_id = uuid.uuid4().hex
            return
        if code:
            log.warning("heartbeat refused: %s", response.status.error_message)
            return
        self.follower.committed(response.status.metadata_offset)
        if self.fenced != response.fenced:
            log.info("broker %d is %s", self.config.node_id, "fenced" if response.fenced else "unfenced")
        self.fenced = response.fenced

    async def _run(self) -> None:
        interval = self.config.broker_heartbeat_interval_ms / 1000
        while True:
            try:
                if self.epoch.value < 0:
                    await self._register()
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker %d lifecycle: %s", self.config.node_id, exc)
            with contextlib.suppress(TimeoutError):  # the interval, or a reported broker (report_unreachable)
                await asyncio.wait_for(self._heartbeat_now.wait(), interval)
            self._heartbeat_now.clear()

    async def controlled_shutdown(self, timeout_s: float) -> None:
        """Ask the controller to move this broker's leaderships away, then wait until this broker's
        image shows them moved. A node stopping on a failure waits too: if its image follows its
        own failed controller, the follower sees the stream stall below the offset the active
        controller answered with and moves to that controller (metadata_follower.py)."""
        if self.epoch.value < 0:
            return
        await self.stop()
        request = cpb.ControlledShutdownRequest(broker_id=self.config.node_id, broker_epoch=self.epoch.value)
        try:
            response = await self.controllers.call(lambda s: s.ControlledShutdown, request, timeout_s=timeout_s)
        except Exception as exc:
            log.warning("controlled shutdown not acknowledged: %s", exc)
            return
        if response.status.error_code:
            log.warning("controlled shutdown refused: %s", response.status.error_message)
            return
        self.follower.committed(response.status.metadata_offset)
        await self.follower.wait_for(response.status.metadata_offset, timeout_s)
        log.info("controlled shutdown: %d leaderships moved", response.leaders_moved)
