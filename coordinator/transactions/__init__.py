"""Transactions: the transaction coordinator's pure state machine (KIP-98 with KIP-890's epoch bump,
and Kafka's transaction version 1 without it for Kafka clients below EndTxn v5).

As the group coordinator (coordinator/groups), it runs on whichever broker
leads the transactional id's partition of ``__transaction_state``, whose log
is its durable state; node/txn_coordinator.py wires it to that partition,
gRPC and the marker writes. It imports nothing from ``node`` or
``replication`` and no asyncio, grpc, clock, randomness or I/O.

Modules, each with its rules in its docstring:

- coordinator.py — ``TransactionCoordinator``: the calls a driver makes, the driver's contract, the rules.
- state.py       — ``TxnState``, the table of allowed moves, ``TransactionMetadata``.
- records.py     — the ``__transaction_state`` record (id → whole metadata) ↔ bytes.
- results.py     — ``TxnResult``, ``TxnAnswer``, ``MarkerJob``, ``TxnConfig``.
"""

from coordinator.transactions.coordinator import TransactionCoordinator
from coordinator.transactions.records import decode_record, encode_record
from coordinator.transactions.results import MarkerJob, TxnAnswer, TxnConfig, TxnResult
from coordinator.transactions.state import (
    MAX_EPOCH,
    MAX_TXN_EPOCH,
    TV1,
    TV2,
    VALID_PREVIOUS_STATES,
    IllegalTxnTransition,
    TransactionMetadata,
    TxnState,
)

__all__ = [
    "MAX_EPOCH",
    "MAX_TXN_EPOCH",
    "TV1",
    "TV2",
    "VALID_PREVIOUS_STATES",
    "IllegalTxnTransition",
    "MarkerJob",
    "TransactionCoordinator",
    "TransactionMetadata",
    "TxnAnswer",
    "TxnConfig",
    "TxnResult",
    "TxnState",
    "decode_record",
    "encode_record",
]
