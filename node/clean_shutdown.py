"""The clean-shutdown marker: did the previous process on this data directory stop cleanly?

KIP-966 needs each broker to tell the controller, when it registers, whether
it may have lost records it once acknowledged. With ``flush.messages=0``
appends reach RocksDB's WAL without an fsync: a kill -9 keeps them (the page
cache survives), a power loss may not, and the broker cannot tell the two
apart afterwards. So, as in Kafka (``.kafka_cleanshutdown``), only a stop that
synced everything counts as clean.

Rules:
- ``take(store)`` at start-up, before anything is served: returns whether the
  marker was there, and deletes it with a synced write — from now on this
  process is running, and if it dies the next one must report unclean.
- ``put(store)`` at the very end of a clean stop, after every write: syncs
  the WAL, then writes the marker with a synced write.
- An empty data directory has no marker: a broker whose disk was wiped is
  unclean, and rightly leaves the ISRs it was in.
"""

from __future__ import annotations

from replication.rocks_store import NodeStore

MARKER = b"clean-shutdown"


def take(store: NodeStore) -> bool:
    clean = store.meta_get(MARKER) is not None
    if clean:
        store.meta_delete(MARKER, sync=True)
    return clean


def put(store: NodeStore) -> None:
    store.sync_wal()
    store.meta_put(MARKER, b"1", sync=True)
