"""The log cleaner: compacts this node's replicas of compacted topics.

The rules of a pass are pure and live in replication/compaction.py; this
driver decides when and where they run. Contract, per round:

1. For each local replica (leader or follower) of a topic whose
   ``cleanup.policy`` has ``compact``, on the event loop: read what only the
   replica knows (high watermark, last stable offset, the producer ids its
   table holds), the log's generation and cleaner checkpoint, and the
   topic's ``CleanerConfig``.
2. In a worker thread: scan the batch headers from the cleaned offset to
   the log end (``scan``): the cleanable end (rule 1), the dirty ratio, the
   age of the oldest uncleaned record. If the ratio reaches
   ``min.cleanable.dirty.ratio`` and something is dirty, run a
   ``CleaningPass`` over ``[log start, cleanable end)`` and apply its chunks
   with ``apply_cleaning`` and the generation read in step 1 (a truncation,
   retention or reset since then drops the rest of the pass; the next round
   starts over). The last chunk carries the new checkpoint; a pass that
   removes nothing still stores one (the cleaned offset moves, and
   tombstones get their horizon).
3. Record the figures (``CleanerStats``) for the metrics.

A round that cleaned something is followed at once by another; otherwise the
cleaner sleeps ``log.cleaner.backoff.ms`` (Kafka's rule), so a dirty log
waits at most that long. One partition at a time, in one thread: the
cleaner decodes records (CPU), and produce and fetch keep the event loop.
A failed partition is logged and skipped; the round goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ketch.recordbatch import iter_headers, parse_header
from node.catalog import TopicConfig
from replication.compaction import CHUNK_BATCHES, CleanerConfig, CleaningPass, cleanable_end, dirty_ratio
from replication.log import LogOffsetError, PartitionLog
from replication.partition import Partition

log = logging.getLogger(__name__)

READ_BYTES = 1 << 20


def read_batches(plog: PartitionLog, offset: int, end: int) -> Iterator[bytes]:
    """Whole batches of ``plog`` whose base offset is in ``[offset, end)``, in offset order."""
    while offset < end:
        data = plog.read(offset, READ_BYTES)
        if not data:
            return
        at = 0
        for header in iter_headers(data):
            if header.base_offset >= end:
                return
            if header.base_offset >= offset:
                yield data[at : at + header.size]
            at += header.size
            offset = header.next_offset


@dataclass(frozen=True, slots=True)
class Bounds:
    """Step 1's reading of one replica."""

    high_watermark: int
    last_stable_offset: int
    generation: int
    live_producers: frozenset[int]
    config: CleanerConfig
    chunk_rewrites: int = CHUNK_BATCHES


@dataclass(frozen=True, slots=True)
class Scan:
    cleanable_end: int
    dirty_bytes: int
    dirty_ratio: float
    oldest_uncleaned_ms: int | None  # base timestamp of the first dirty batch


def scan(plog: PartitionLog, bounds: Bounds, now_ms: int) -> Scan:
    """Step 2's reading: the headers from the cleaned offset to the end."""
    start, end = plog.log_start_offset, plog.log_end_offset
    first_dirty = max(plog.cleaner_checkpoint.cleaned_offset, start)
    sizes: list[tuple[int, int]] = []
    last_base, lag_bound, oldest = end, end, None
    for batch in read_batches(plog, first_dirty, end):
        header = parse_header(batch)
        sizes.append((header.base_offset, header.size))
        last_base = header.base_offset
        if oldest is None and header.records_count:
            oldest = header.base_timestamp
        if lag_bound == end and header.max_timestamp > now_ms - bounds.config.min_compaction_lag_ms:
            lag_bound = header.base_offset
    upper = cleanable_end(start, bounds.high_watermark, bounds.last_stable_offset, last_base, lag_bound)
    dirty = sum(size for base, size in sizes if base < upper)
    tail = sum(size for base, size in sizes if base >= upper)
    clean = max(plog.size_bytes - dirty - tail, 0)
    return Scan(upper, dirty, dirty_ratio(clean, dirty), oldest)


@dataclass(slots=True)
class CleanerStats:
    """What the metrics show: totals, and per replica (topic, partition) the last scan."""

    runs: int = 0
    bytes_removed: int = 0
    records_removed: int = 0
    dirty: dict[tuple[str, int], tuple[float, int | None]] = field(default_factory=dict)  # ratio, oldest ms


def clean_once(plog: PartitionLog, bounds: Bounds, now_ms: int, stats: CleanerStats, key: tuple[str, int]) -> bool:
    """Step 2 for one replica (runs in the worker thread); True if a pass was applied."""
    found = scan(plog, bounds, now_ms)
    stats.dirty[key] = (found.dirty_ratio, found.oldest_uncleaned_ms)
    if found.dirty_bytes == 0 or found.dirty_ratio < bounds.config.min_cleanable_dirty_ratio:
        return False
    start, upper = plog.log_start_offset, found.cleanable_end
    cleaning = CleaningPass(
        lambda: read_batches(plog, start, upper),
        upper,
        plog.aborted_index(),
        plog.cleaner_checkpoint,
        bounds.config,
        now_ms,
        bounds.live_producers,
        bounds.chunk_rewrites,
    )
    pending = None
    for chunk in cleaning.chunks():
        if pending is not None and not plog.apply_cleaning(bounds.generation, pending, None):
            return False
        pending = chunk
    if not plog.apply_cleaning(bounds.generation, pending or [], cleaning.checkpoint):
        return False
    stats.runs += 1
    stats.bytes_removed += cleaning.bytes_removed
    stats.records_removed += cleaning.records_removed
    stats.dirty[key] = (0.0, None)
    log.info(
        "cleaned %s-%d up to offset %d: %d records, %d bytes removed",
        key[0],
        key[1],
        upper,
        cleaning.records_removed,
        cleaning.bytes_removed,
    )
    return True


def cleaner_config(config: TopicConfig) -> CleanerConfig:
    return CleanerConfig(config.delete_retention_ms, config.min_cleanable_dirty_ratio, config.min_compaction_lag_ms)


class LogCleaner:
    """Step 1 and the loop; ``replicas()`` gives each local replica with its topic's settings."""

    def __init__(
        self,
        replicas: Callable[[], Iterable[tuple[Partition, TopicConfig]]],
        backoff_ms: int,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        chunk_rewrites: int = CHUNK_BATCHES,
    ) -> None:
        self.replicas = replicas
        self.chunk_rewrites = chunk_rewrites
        self.backoff_s = backoff_ms / 1000
        self.clock_ms = clock_ms
        self.stats = CleanerStats()

    async def run(self) -> None:
        while True:
            cleaned = await self.clean_round()
            if not cleaned:
                await asyncio.sleep(self.backoff_s)

    async def clean_round(self) -> bool:
        cleaned = False
        live = set()
        for part, config in list(self.replicas()):
            if not config.compacted:
                continue
            key = (part.topic, part.index)
            live.add(key)
            plog = part.log
            bounds = Bounds(
                part.high_watermark,
                part.last_stable_offset,
                plog.generation,
                frozenset(plog.producer_state.entries),
                cleaner_config(config),
                self.chunk_rewrites,
            )
            try:
                cleaned |= await asyncio.to_thread(clean_once, plog, bounds, self.clock_ms(), self.stats, key)
            except (LogOffsetError, RuntimeError) as exc:  # the log moved or closed under the pass
                log.info("cleaning %s-%d stopped: %s", key[0], key[1], exc)
            except Exception:
                log.exception("cleaning %s-%d failed", key[0], key[1])
        for gone in set(self.stats.dirty) - live:
            del self.stats.dirty[gone]
        return cleaned
