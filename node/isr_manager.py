"""IsrManager: a leader's ISR shrink/expand proposals go to the controller (AlterPartition).

Every ``isr_check_interval_ms`` each partition this broker leads is asked
for a proposal (replication/leader_state.py decides: shrink laggards, expand
caught-up replicas, one change in flight). A proposal is sent as
AlterPartition with the leader epoch and the partition epoch it was made
against; the controller accepts it only if both are still current. The
committed ISR comes back through the metadata image like every other change
(``Partition.become_leader`` with the same epoch applies it), which clears
the pending proposal; a refusal clears it at once so the next tick can
propose again against fresher state. While a change is pending, the leader
uses the larger of the two ISRs for its high watermark.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ketch.api.v1 import controller_pb2 as cpb
from node.broker import Broker
from node.controller_client import ControllerClient
from node.lifecycle import BrokerEpoch

log = logging.getLogger("ketch.node.isr")


class IsrManager:
    def __init__(
        self,
        broker: Broker,
        controllers: ControllerClient,
        broker_epoch: BrokerEpoch,
        interval_ms: int,
    ) -> None:
        self.broker = broker
        self.controllers = controllers
        self._broker_epoch = broker_epoch
        self._interval_s = interval_ms / 1000
        self.shrinks = 0
        self.expands = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_once(int(time.monotonic() * 1000))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ISR check failed")

    async def check_once(self, now_ms: int) -> None:
        epoch = self._broker_epoch.value
        if epoch < 0:
            return
        for tp, part in self.broker.replicas().items():
            leader = part.leader
            if leader is None:
                continue
            proposal = leader.propose_isr_change(now_ms)
            if proposal is None:
                continue
            log.info("%s-%d: proposing ISR %s (%s)", part.topic, part.index, list(proposal.new_isr), proposal.reason)
            request = cpb.AlterPartitionRequest(
                broker_id=self.broker.node_id,
                broker_epoch=epoch,
                topic_id=tp.topic_id,
                partition=tp.partition,
                leader_epoch=leader.leader_epoch,
                partition_epoch=proposal.partition_epoch,
                new_isr=list(proposal.new_isr),
                isr_broker_epochs=leader.isr_broker_epochs(proposal.new_isr),
            )
            try:
                response = await self.controllers.call(lambda s: s.AlterPartition, request, timeout_s=5.0)
            except Exception as exc:
                log.warning("%s-%d: AlterPartition not answered: %s", part.topic, part.index, exc)
                leader.on_isr_rejected()
                continue
            if response.status.error_code:
                log.info("%s-%d: AlterPartition refused: %s", part.topic, part.index, response.status.error_message)
                leader.on_isr_rejected()
                continue
            if len(proposal.new_isr) < len(leader.isr):
                self.shrinks += 1
            else:
                self.expands += 1
