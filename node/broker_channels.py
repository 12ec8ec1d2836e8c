"""gRPC channels from this broker to the other brokers, by broker id.

Broker-to-broker calls other than replication (the replica fetcher keeps its
own channel per leader) go through here: the transaction coordinator's
WriteTxnMarkers to partition leaders, and a partition leader's KIP-890
verification call to a transaction coordinator. Rules:

- The address is the broker's registration in the current metadata image;
  an unknown broker is ``None`` (the caller retries after the image moves).
- One channel per address, kept until ``close``; a broker that re-registers
  at a new address gets a new channel and the old one is closed.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from coordinator.metadata import MetadataImage
from ketch.api.v1 import ketch_pb2_grpc
from ketch.tls import PLAINTEXT, SecurityConfig, open_aio_channel

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


class BrokerChannels:
    def __init__(self, image: Callable[[], MetadataImage], security: SecurityConfig = PLAINTEXT) -> None:
        self._image = image
        self._security = security
        self._channels: dict[int, tuple[str, grpc.aio.Channel]] = {}
        self._replaced: list[grpc.aio.Channel] = []

    def stub(self, broker_id: int) -> ketch_pb2_grpc.KetchStub | None:
        broker = self._image().broker(broker_id)
        if broker is None:
            return None
        address = f"{broker.host}:{broker.port}"
        held = self._channels.get(broker_id)
        if held is None or held[0] != address:
            if held is not None:
                self._replaced.append(held[1])  # closed with the rest: a call may still use it
            held = (address, open_aio_channel(address, self._security, CHANNEL_OPTIONS))
            self._channels[broker_id] = held
        return ketch_pb2_grpc.KetchStub(held[1])

    async def close(self) -> None:
        for channel in [c for _, c in self._channels.values()] + self._replaced:
            await channel.close()
        self._channels.clear()
        self._replaced.clear()
