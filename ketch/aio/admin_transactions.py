"""The Admin's transaction calls (kafka-transactions.sh): list and describe transactions.

A mixin of ``Admin`` (admin.py), using its connection. Rules:
- A broker lists only the transactional ids whose coordinator it is, so
  ``list_transactions`` asks every broker in the metadata and merges the
  answers (every broker must answer; coordinator errors and transport
  failures are retried as for groups, coordinator_client.py).
- ``describe_transactions`` sends each id to its own transaction coordinator
  (FindCoordinator key_type=1); NOT_COORDINATOR and the like look it up
  again. An id the coordinator does not know raises its typed error
  (TRANSACTIONAL_ID_NOT_FOUND-like codes come back as ``KetchError``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ketch.aio.connection import Connection
from ketch.aio.coordinator_client import TRANSACTION_KEY, CoordinatorClient
from ketch.api.v1 import ketch_pb2
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.records import TopicPartition

__all__ = ["TransactionAdmin", "TransactionDescription", "TransactionListing"]


@dataclass(frozen=True)
class TransactionListing:
    transactional_id: str
    producer_id: int
    state: str


@dataclass(frozen=True)
class TransactionDescription:
    transactional_id: str
    state: str  # Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    start_time_ms: int  # wall time the open transaction started; -1 when none is open
    partitions: list[TopicPartition]
    group_ids: list[str]


def _status(response: Any) -> tuple[int, str]:
    return response.error_code, response.error_message


def _described_status(response: Any) -> tuple[int, str]:
    if response.transactions:
        return response.transactions[0].error_code, response.transactions[0].error_message
    return ErrorCode.NONE, ""


class TransactionAdmin:
    _conn: Connection
    _coordinators: CoordinatorClient  # the group coordinators' client: its retry rule serves brokers too
    _txn_coordinators: CoordinatorClient

    def _txn_client(self) -> CoordinatorClient:
        if not hasattr(self, "_txn_coordinators"):
            c = self._coordinators
            self._txn_coordinators = CoordinatorClient(
                self._conn, backoff=c.backoff, max_backoff=c.max_backoff, key_type=TRANSACTION_KEY
            )
        return self._txn_coordinators

    async def list_transactions(self, states: Iterable[str] = ()) -> list[TransactionListing]:
        """Every transactional id of the cluster (optionally only in ``states``), sorted by id."""
        cluster = await self._conn.refresh()
        request = ketch_pb2.ListTransactionsRequest(states=list(states))
        nodes = sorted(cluster.brokers)
        responses = await asyncio.gather(
            *(
                self._coordinators.retrying(
                    f"ListTransactions at broker {node_id}",
                    functools.partial(self._conn.call_node, node_id, "ListTransactions", request),
                    status=_status,
                )
                for node_id in nodes
            )
        )
        found: dict[str, TransactionListing] = {}
        for node_id, response in zip(nodes, responses, strict=True):
            if response.error_code != ErrorCode.NONE:
                raise error_for(response.error_code, f"ListTransactions at broker {node_id}: {response.error_message}")
            for t in response.transactions:
                found.setdefault(t.transactional_id, TransactionListing(t.transactional_id, t.producer_id, t.state))
        return [found[t] for t in sorted(found)]

    async def describe_transactions(self, transactional_ids: Iterable[str]) -> list[TransactionDescription]:
        """State, producer id and epoch, partitions and start time of each id, from its coordinator."""
        ids = [transactional_ids] if isinstance(transactional_ids, str) else list(transactional_ids)
        return list(await asyncio.gather(*(self._describe_transaction(t) for t in ids)))

    async def _describe_transaction(self, tid: str) -> TransactionDescription:
        response = await self._txn_client().call(
            tid,
            "DescribeTransactions",
            ketch_pb2.DescribeTransactionsRequest(transactional_ids=[tid]),
            _described_status,
        )
        if not response.transactions:
            raise KetchError(f"the coordinator did not describe transactional id {tid!r}")
        d = response.transactions[0]
        if d.error_code != ErrorCode.NONE:
            raise error_for(d.error_code, d.error_message or f"transactional id {tid!r}")
        return TransactionDescription(
            d.transactional_id or tid,
            d.state,
            d.producer_id,
            d.producer_epoch,
            d.transaction_timeout_ms,
            d.start_time_ms,
            sorted(TopicPartition(p.topic, p.partition) for p in d.partitions),
            sorted(d.group_ids),
        )
