"""The Raft driver's gRPC transport: one outbound queue and sender task per peer, one inbound handler.

Wire: ``ketch.v1.KetchRaft/Step(RaftBatch) -> StepAck`` (proto/ketch/api/v1/raft.proto),
served on the node's one gRPC server. Each node is both client and server: a
response (VOTE_RESP, APP_RESP, ...) travels as the responder's own Step call,
never inside the StepAck, so the transport is one-way datagrams over unary calls.

Outbound rules:
- ``send(m)`` never blocks and never fails: it appends to the peer's queue and
  wakes its sender. Raft tolerates loss, so the queue is bounded
  (``max_queued`` messages); when full, the oldest message is dropped.
- The sender takes everything queued (up to ``max_batch_bytes`` of encoded
  messages, but always at least one) into ONE unary Step call, and awaits it
  before sending the next batch: one call in flight per peer, and whatever
  Raft produced meanwhile rides in the next call (batching without a linger
  delay; gRPC's per-call cost is ~0.6 ms here, DESIGN.md §3).
- On any error (peer down, deadline, message too large) the batch is
  dropped — the leader re-sends from its progress tracking, a candidate
  re-campaigns — and the sender backs off (``backoff_s``, doubling up to
  ``max_backoff_s``; reset by a success) so a dead peer costs one failed call
  per backoff, not one per message. A peer going down logs once at INFO; other
  errors (a snapshot over the size limit, a peer without KetchRaft) at WARNING.
- Channels raise gRPC's 4 MiB limits to ``MAX_MESSAGE_BYTES`` (64 MiB) for
  snapshots, and reconnect quickly (100 ms .. 1 s backoff, like the client):
  gRPC's default reconnect backoff grows to two minutes, which would keep a
  restarted controller out of the quorum long after it came back. The
  receiving server must accept messages that large too (``server_options``).

Every batch names its sender and the sender's advertised address, so a receiver
can answer a peer that is not in its static voters.

Address book (``PeerBook``): a peer's address is, in order, the one the voter set
records (KIP-853: a voter added at runtime), the one the peer sent with its own
batches (an observer, a controller being added; a static voter's is never
replaced this way), the static one (controller_quorum_voters). A ``Peer`` is
created the first time a message needs one and keeps its address.

Inbound rules: ``Step`` decodes each message (dropping, with a log line, one
that does not decode), hands the batch to the driver's ``deliver`` callback, and
returns at once. The callback steps the core; it never awaits I/O, so a slow
fsync never holds a peer's call open.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping

import grpc

from coordinator.raft import Message
from coordinator.raft_codec import message_from_pb, message_to_pb
from ketch.api.v1 import raft_pb2, raft_pb2_grpc
from ketch.tls import PLAINTEXT, SecurityConfig, open_aio_channel

log = logging.getLogger("ketch.raft.transport")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_PEER_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def server_options() -> list[tuple[str, int]]:
    """Options a gRPC server serving KetchRaft needs (the node merges them into its own)."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


class Peer:
    """The outbound half towards one peer: queue, sender task, channel."""

    def __init__(
        self,
        peer_id: int,
        address: str,
        *,
        rpc_timeout_s: float,
        backoff_s: float,
        max_backoff_s: float,
        max_queued: int = 4096,
        max_batch_bytes: int = MAX_MESSAGE_BYTES // 2,
        sender: int = 0,
        sender_address: str = "",
        security: SecurityConfig = PLAINTEXT,
    ) -> None:
        self.id = peer_id
        self.security = security
        self.sender = sender
        self.sender_address = sender_address
        self.address = address
        self.rpc_timeout_s = rpc_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_batch_bytes = max_batch_bytes
        self.queue: deque[raft_pb2.RaftMessage] = deque(maxlen=max_queued)
        self.sent_batches = 0
        self.failed_batches = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._channel = open_aio_channel(self.address, self.security, channel_options())
        self._task = asyncio.create_task(
            self._run(raft_pb2_grpc.KetchRaftStub(self._channel)), name=f"raft-send-{self.id}"
        )

    def send(self, m: Message) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(message_to_pb(m))
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        self.queue.clear()

    def _take_batch(self) -> raft_pb2.RaftBatch:
        batch = raft_pb2.RaftBatch(sender=self.sender, sender_address=self.sender_address)
        size = 0
        while self.queue:
            m = self.queue[0]
            n = m.ByteSize()
            if batch.messages and size + n > self.max_batch_bytes:
                break
            self.queue.popleft()
            batch.messages.append(m)
            size += n
        return batch

    async def _run(self, stub: raft_pb2_grpc.KetchRaftStub) -> None:
        delay = self.backoff_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                batch = self._take_batch()
                try:
                    await stub.Step(batch, timeout=self.rpc_timeout_s)
                except Exception as exc:  # any failure: drop the batch, Raft re-sends
                    self.failed_batches += 1
                    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                    level = logging.WARNING if code not in _PEER_DOWN else logging.DEBUG
                    if code in _PEER_DOWN and delay == self.backoff_s:
                        level = logging.INFO
                    what = code.name if code is not None else repr(exc)
                    log.log(
                        level,
                        "raft peer %d (%s): %s; dropped %d messages, retrying in %.2fs",
                        self.id,
                        self.address,
                        what,
                        len(batch.messages),
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
                else:
                    self.sent_batches += 1
                    delay = self.backoff_s


class RaftServicer(raft_pb2_grpc.KetchRaftServicer):
    """The inbound half: decode a batch, hand it to ``deliver``, answer at once."""

    def __init__(self, deliver: Callable[[list[Message], int, str], None]) -> None:
        self._deliver = deliver
        self.undecodable = 0

    async def Step(self, request: raft_pb2.RaftBatch, context: grpc.aio.ServicerContext) -> raft_pb2.StepAck:
        messages: list[Message] = []
        for pb in request.messages:
            try:
                messages.append(message_from_pb(pb))
            except ValueError as exc:
                self.undecodable += 1
                log.warning("dropping undecodable raft message from %d: %s", pb.frm, exc)
        if messages:
            self._deliver(messages, request.sender, request.sender_address)
        return raft_pb2.StepAck()


class PeerBook:
    """Every outbound ``Peer`` of one node, created on demand (module rules: Address book)."""

    def __init__(
        self,
        me: int,
        my_address: str,
        static: Mapping[int, str],
        voter_address: Callable[[int], str],
        *,
        rpc_timeout_s: float,
        backoff_s: float,
        max_backoff_s: float,
        security: SecurityConfig = PLAINTEXT,
    ) -> None:
        self.me = me
        self.security = security
        self.my_address = my_address
        self.static = dict(static)
        self._voter_address = voter_address
        self._timing = (rpc_timeout_s, backoff_s, max_backoff_s)
        self.learned: dict[int, str] = {}
        self.peers: dict[int, Peer] = {}
        self._running = False

    def address_of(self, node_id: int) -> str:
        if node_id == self.me:
            return self.my_address
        return self._voter_address(node_id) or self.learned.get(node_id) or self.static.get(node_id, "")

    def learn(self, sender: int, address: str) -> None:
        """``sender`` says it is reachable at ``address`` (from its own batch)."""
        if address and sender not in (0, self.me) and sender not in self.static:
            self.learned[sender] = address

    def get(self, node_id: int) -> Peer | None:
        """The peer for ``node_id``, created (and started, if running) on first need."""
        peer = self.peers.get(node_id)
        if peer is None and node_id != self.me:
            address = self.address_of(node_id)
            if not address:
                return None
            rpc_timeout_s, backoff_s, max_backoff_s = self._timing
            peer = self.peers[node_id] = Peer(
                node_id,
                address,
                rpc_timeout_s=rpc_timeout_s,
                backoff_s=backoff_s,
                max_backoff_s=max_backoff_s,
                sender=self.me,
                sender_address=self.my_address,
                security=self.security,
            )
            if self._running:
                peer.start()
        return peer

    def start(self) -> None:
        self._running = True
        for node_id in self.static:
            self.get(node_id)
        for peer in self.peers.values():
            if not peer.started:
                peer.start()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*(p.stop() for p in self.peers.values()))
