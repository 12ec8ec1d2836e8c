"""The node's one RocksDB: partition logs, their state, and the node catalogue.

One RocksDB (rocksdict) per node data directory (DESIGN.md §4), opened in raw
mode everywhere: keys and values are ``bytes`` only, and rocksdict never
serializes Python objects itself (a non-raw ``WriteBatch`` is refused by a raw database).

Column families and key layout (all integers big-endian, so byte order is
numeric order and one partition's keys form one contiguous range):

    log     pid u32 | base offset u64             -> one record batch, as given
    state   pid u32 | field name (ascii)          -> field value
    tindex  pid u32 | running max ts u64 | base u64 -> b""  (see rocks_log.py)
    producers pid u32 | b"e" | producer id u64      -> ProducerEntry.encode()   (the live table)
              pid u32 | b"s" | offset u64           -> ProducerStateTable.encode() (a snapshot)
    txnindex  pid u32 | abort marker offset u64      -> AbortedTxn.encode() (producer id, first offset)
    meta    any bytes                              -> any bytes (node catalogue)
    raft     index u64                             -> RaftEntry (controller Raft log)
    raftmeta b"hard" | b"snap"                     -> RaftHardState | RaftSnapshot

The ``state`` fields are described in ``replication/rocks_log.py`` (start,
end, size, maxts, floor, the leader-epoch cache ``epochs`` and the
high-watermark checkpoint ``hw``); the producer state has its own column
family (a column family missing from an older database is created on open). ``meta`` belongs to the node
layer (topic catalogue, cluster id), which uses ``meta_*``. ``raft`` and
``raftmeta`` belong to ``coordinator/raft_storage.py`` (the controller quorum's
log, term, vote and snapshot), which writes them through ``write_batch``/``write``.

Rules:
- Partition ids are u32 below 2**32 - 1, so ``pid + 1`` bounds the range;
  ``drop_partition`` deletes ``[pid, pid + 1)`` in every partition column
  family in one synced write (topic deletion).
- ``partition_log(pid)`` returns the one open ``RocksPartitionLog`` for that
  partition (two objects over the same keys would disagree on the cached
  state); ``close()`` on the log, ``drop_partition`` and ``NodeStore.close()``
  forget it.
- Writes with ``sync=False`` still go through the WAL: they survive the
  process being killed, not a power cut. ``sync_wal()`` makes every earlier
  write durable with one fsync (group commit). WAL recovery is point-in-time:
  a torn tail write is dropped whole, never half applied.
- The WAL files on disk are bounded by ``MAX_TOTAL_WAL_BYTES`` (256 MiB): past it,
  RocksDB flushes the column families whose data keeps the oldest WAL file alive.
  RocksDB deletes a WAL file only once every column family with data in it has
  flushed, and the small ones (state, tindex, producers) rarely fill a 64 MiB
  memtable, so with RocksDB's default bound (4 x the write buffers, ~4.6 GB for
  these nine families) a node kept every WAL file: after 600 MB produced to one
  topic, each node held 679 MB on disk (ten 64 MB WAL files) for 89 MB of table files
  (measured 2026-12-05). Flushing persists what the WAL held; nothing is dropped.
- A failed write or WAL sync (a full disk, an I/O error) raises KAFKA_STORAGE_ERROR
  (retriable for clients): the WriteBatch is atomic, so nothing of it is applied, and
  callers change their in-memory state only after ``write`` returns.
- A failure is terminal for the open database: RocksDB keeps the error as its
  "background error" and refuses every later write, even once the disk has room again
  (measured on a full tmpfs: writes still failed 60 s after the space was freed), and
  rocksdict 0.3.29 exposes neither ``DB::Resume`` nor an ``SstFileManager`` that would
  let it recover by itself. Reopening the database recovers it from the WAL. So the
  first failure is kept in ``failure`` and passed once to ``on_failure`` (called from
  whichever thread wrote); the node stops on it (node/main.py), as a Kafka broker
  does when its last log directory fails, and its leaderships move to healthy replicas.
- Threads: each log serializes its own changes (see rocks_log.py); the
  store's own methods (open/drop/close a partition, ``meta_*``) are called
  from the node's event loop only. ``write`` itself is thread-safe (RocksDB
  serializes writers): the Raft storage runs its synced writes in a worker
  thread, and whoever owns the store closes it only after they finished.

rocksdict 0.3.29 gotchas found by experiment:
- ``Rdict.close()`` does not close the database while a column-family
  ``Rdict``, a ``ColumnFamily`` handle or an iterator is still referenced; the
  LOCK stays held and reopening fails. ``close()`` therefore closes each
  column family, drops every handle, then closes the database; logs never keep
  iterators beyond one call.
- ``ReadOptions`` iterate bounds are not applied as raw bytes on a raw
  database (bounds ``[b"b", b"b3")`` yielded ``a1, a2``), and
  ``ReadOptions(raw_mode=True)``, which its docstring mentions, is refused;
  iteration here checks the partition prefix by hand instead.
- ``WriteOptions.disable_wal`` is a property in 0.3.29, not the method the
  type stub declares (not used here: every write goes through the WAL).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import rocksdict

from ketch.errors import ErrorCode, KetchError
from replication.log import PRODUCER_SNAPSHOT_INTERVAL
from replication.rocks_log import RocksPartitionLog

MAX_PID = 2**32 - 2
MAX_TOTAL_WAL_BYTES = 256 << 20  # see the module docstring: the WAL files one node keeps
PARTITION_CFS = ("log", "state", "tindex", "producers", "txnindex")
RAFT_CFS = ("raft", "raftmeta")
ALL_CFS = (*PARTITION_CFS, "meta", *RAFT_CFS)
_U32 = struct.Struct(">I")


def pid_prefix(pid: int) -> bytes:
    if not 0 <= pid <= MAX_PID:
        raise ValueError(f"partition id {pid} is outside 0..{MAX_PID}")
    return _U32.pack(pid)


def _options(max_total_wal_bytes: int) -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    opts.set_max_total_wal_size(max_total_wal_bytes)
    return opts


class NodeStore:
    """The node's RocksDB; see the module docstring for layout and rules."""

    def __init__(self, path: str, db: Any) -> None:
        self.path = path
        self._db = db
        self.cf: dict[str, Any] = {name: db.get_column_family(name) for name in ALL_CFS}
        self.handle: dict[str, Any] = {name: db.get_column_family_handle(name) for name in ALL_CFS}
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self._nosync = rocksdict.WriteOptions()
        self._logs: dict[int, RocksPartitionLog] = {}
        self._closed = False
        self.failure: KetchError | None = None
        self._failure_lock = threading.Lock()
        self.on_failure: Callable[[KetchError], None] | None = None

    @classmethod
    def open(cls, path: str, max_total_wal_bytes: int = MAX_TOTAL_WAL_BYTES) -> NodeStore:
        """Open (creating if missing) the store in directory ``path``."""
        families = {name: rocksdict.Options(raw_mode=True) for name in ALL_CFS}
        return cls(path, rocksdict.Rdict(path, _options(max_total_wal_bytes), column_families=families))

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- partitions -------------------------------------------------------

    def partition_log(self, pid: int, snapshot_interval: int = PRODUCER_SNAPSHOT_INTERVAL) -> RocksPartitionLog:
        """The partition's log, opened from its stored state (created empty if new);
        ``snapshot_interval`` applies when it is opened."""
        self._check_open()
        log = self._logs.get(pid)
        if log is None:
            log = self._logs[pid] = RocksPartitionLog(self, pid, snapshot_interval)
        return log

    def drop_partition(self, pid: int) -> None:
        """Delete everything stored for the partition (its log, state and index)."""
        self._check_open()
        log = self._logs.pop(pid, None)
        if log is not None:
            log.close()
        lo, hi = pid_prefix(pid), _U32.pack(pid + 1)
        wb = self.write_batch()
        for name in PARTITION_CFS:
            wb.delete_range(lo, hi, self.handle[name])
        self.write(wb, sync=True)

    def forget(self, log: RocksPartitionLog) -> None:
        """Called by ``RocksPartitionLog.close``."""
        if self._logs.get(log.pid) is log:
            del self._logs[log.pid]

    # -- writes -----------------------------------------------------------

    def write_batch(self) -> Any:
        return rocksdict.WriteBatch(raw_mode=True)

    def write(self, wb: Any, *, sync: bool) -> None:
        """Apply ``wb`` atomically; fsync the WAL first when ``sync``."""
        self._check_open()
        try:
            self._db.write(wb, self._sync if sync else self._nosync)
        except Exception as exc:
            raise self._storage_error("write", exc) from exc

    def sync_wal(self) -> None:
        """fsync the WAL: every write made so far survives a power cut."""
        self._check_open()
        try:
            self._db.flush_wal(True)
        except Exception as exc:
            raise self._storage_error("WAL sync", exc) from exc

    def _storage_error(self, what: str, exc: Exception) -> KetchError:
        error = KetchError(
            f"storage {what} failed in {self.path}: {exc} (nothing was written; free disk space or fix the disk)",
            code=ErrorCode.KAFKA_STORAGE_ERROR,
        )
        with self._failure_lock:
            first = self.failure is None and not self._closed
            if first:
                self.failure = error
        if first and self.on_failure is not None:
            self.on_failure(error)
        return error

    # -- node catalogue ---------------------------------------------------

    def meta_get(self, key: bytes) -> bytes | None:
        self._check_open()
        value: bytes | None = self.cf["meta"].get(key)
        return value

    def meta_put(self, key: bytes, value: bytes, sync: bool = True) -> None:
        self.meta_update({key: value}, sync=sync)

    def meta_delete(self, key: bytes, sync: bool = True) -> None:
        self.meta_update({key: None}, sync=sync)

    def meta_update(self, changes: Mapping[bytes, bytes | None], *, sync: bool = True) -> None:
        """Put (value) or delete (None) several keys in one atomic write."""
        wb = self.write_batch()
        for key, value in changes.items():
            if value is None:
                wb.delete(key, self.handle["meta"])
            else:
                wb.put(key, value, self.handle["meta"])
        self.write(wb, sync=sync)

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        self._check_open()
        out: list[tuple[bytes, bytes]] = []
        it = self.cf["meta"].iter()
        it.seek(prefix)
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            out.append((key, it.value()))
            it.next()
        return out

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Close every open log and the database (idempotent). After a storage failure
        RocksDB's close reports that same error again ("Writer has previous error"); it
        is not raised then, so the database is closed and the directory can be reopened."""
        if self._closed:
            return
        for log in list(self._logs.values()):
            log.close()
        errors: list[Exception] = []
        for cf in self.cf.values():
            try:
                cf.close()
            except Exception as exc:
                errors.append(exc)
        self.cf.clear()
        self.handle.clear()
        self._closed = True
        try:
            self._db.close()
        except Exception as exc:
            errors.append(exc)
        if errors and self.failure is None:
            raise errors[0]

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"node store {self.path} is closed")
