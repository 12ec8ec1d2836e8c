"""One partition replica on this broker: leader or follower, over a PartitionLog.

The replica manager (node/broker.py) sets the role from the metadata image:
``become_leader`` (with replicas, ISR, leader and partition epoch) or
``become_follower``. A replica that is not the leader never accepts a
produce, whatever its history: the deposed leader stops at once.

Produce (``append``, leader only):
- The request's batches pass replication/log_validator.py (Kafka's ``LogValidator``):
  whole valid batches, none over ``max.message.bytes``, records matching their
  headers (decompressed under ``max_decompressed_bytes``), no control batch, keys
  on a compacted topic (``require_keys``). Otherwise the whole request is refused
  (CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE, UNSUPPORTED_VERSION) and
  nothing is stored.
- acks=all needs at least ``min.insync.replicas`` members in the committed
  ISR, else NOT_ENOUGH_REPLICAS before anything is appended.
- Idempotent batches (producer id >= 0; KIP-98): a request entry holds at
  most one, alone (INVALID_RECORD otherwise, Kafka's rule for magic 2). It
  is checked against the log's producer state (replication/producer_state.py)
  before offsets are assigned: a refusal raises its code
  (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, ...); an exact retry
  of one of the producer's last 5 batches stores nothing and returns the
  ORIGINAL offsets with ``duplicate=True`` (the driver still waits for the
  high watermark to pass them for acks=all, as the first attempt would have).
  Followers append the leader's bytes unchanged; their log updates its
  producer state itself.
- Transactions (replication/transactions.py): a control batch from a client
  is INVALID_RECORD (only ``write_marker`` writes markers). A transactional
  batch that would START a transaction here (``transaction_to_verify`` names
  its producer id and epoch) is stored only with ``transaction_verified``
  (the driver asked the coordinator, KIP-890), else INVALID_TXN_STATE.
- The leader assigns base offsets (continuing the log end offset) and its
  leader epoch in each header, in place, and appends all batches in one
  atomic log write.

Markers (``write_marker``, leader only): the coordinator's marker of epoch E
for a producer is written only by the marker rule (``marker_verdict``):
otherwise it is a duplicate or stale one, nothing is written, and the answer
is None (the driver answers NONE). acks=all rules apply (min.insync.replicas).

Last stable offset: ``min(high watermark, first offset of the oldest open
transaction)`` (never below the log start). A read_committed read stops at
it and carries the aborted transactions overlapping what it returns.

High watermark: the leader's comes from LeaderState (the smallest log end
offset over the maximal ISR); a follower's is min(leader's, its own log
end). It is checkpointed in the log's state and never moves backwards.

Fetch (``read`` for consumers, ``serve_follower_fetch`` for followers):
- A fetch offset outside ``[log_start_offset, log_end_offset]`` is
  OFFSET_OUT_OF_RANGE, naming the valid range.
- Consumers get only batches wholly below the high watermark; followers get
  everything up to the log end. The first batch may start before the fetch
  offset (the reader skips records).
- ``max_bytes`` 0 means the response has no room left: the answer carries the
  offsets only (nothing is read, no range check, no diverging epoch).
- A follower's fetch (``serve_follower_fetch``) carries its last fetched
  epoch and is served in this order (Kafka's ``Partition.fetchRecords``):
  1. Divergence, checked once: if that epoch ends earlier on this leader (or
     is unknown here), the answer is the diverging epoch and its end offset
     instead of records (KIP-320), and nothing else happens — a diverging
     follower's fetch offset says nothing of what it holds.
  2. Progress: a matching fetch offset is the follower's log end
     (``LeaderState.on_follower_fetch``); recorded before the read, so the
     answer carries the high watermark it moved, and before the range check,
     so a fetch that is then out of range still counts.
  3. The read. ``FollowerFetch`` says whether the high watermark moved (the
     driver wakes acks=all waiters and long-polling consumers) and carries a
     read error instead of raising it, so that news is not lost.

Follower (``apply_fetch_answer``): the leader's answer is applied with the
rules of replication/follower.py — reset, truncate on divergence, append
what is new, then the follower's high watermark.

Metadata: the replica manager acts on an image only once it has reached this
broker process's own registration (``caught_up_to_registration``, Kafka's
initial catch-up): an older image may still name this broker the leader of
an epoch whose unsynced tail it lost in a crash, and leading that epoch again
would append different records under the same epoch, which epoch-based
truncation cannot tell apart.

Everything here is synchronous and free of I/O other than the injected log,
so the node driver decides where (event loop or thread) each call runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.record.default_records import DefaultRecordBatch

from ketch import recordbatch
from ketch.decompression import MAX_DECOMPRESSED_BATCH_BYTES
from ketch.errors import ErrorCode, KetchError, OffsetOutOfRangeError
from replication.follower import FetchAnswer, FollowerUpdate, divergence_truncation, plan_append
from replication.leader_state import LeaderState
from replication.log import PartitionLog
from replication.log_validator import validate_batches
from replication.producer_state import (
    PRODUCER_ID_EXPIRATION_MS,
    Duplicate,
    IdempotentBatch,
    Refuse,
    starts_transaction,
)
from replication.transactions import TV2, SkipMarker, last_stable_offset, marker_verdict, open_transactions


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    batches: int
    bytes: int
    duplicate: bool = False  # a producer's retry of a stored batch: nothing was appended


@dataclass(frozen=True, slots=True)
class ReadResult:
    records: bytes
    high_watermark: int
    log_start_offset: int
    diverging: tuple[int, int] | None = None  # (epoch, end offset) for a divergent follower
    last_stable_offset: int = -1
    aborted: tuple[tuple[int, int], ...] = ()  # (producer id, first offset), read_committed only


@dataclass(frozen=True, slots=True)
class FollowerFetch:
    """The leader's answer to one follower fetch (Kafka's ``LogReadResult``): the read (empty
    if it raised ``error``; the fetch still counted as progress), and whether the fetch moved
    the high watermark."""

    read: ReadResult
    high_watermark_moved: bool
    error: KetchError | None = None


def caught_up_to_registration(image_offset: int, registration_offset: int) -> bool:
    """Whether a broker may act on an image at ``image_offset``: only once this process is
    registered (``registration_offset`` >= 0) and the image includes that registration."""
    return 0 <= registration_offset <= image_offset


class Partition:
    leader_state_class: type[LeaderState] = LeaderState
    """What a new leader epoch's state is built as (the replication simulation puts old bugs back
    by subclassing ``LeaderState``)."""

    def __init__(self, topic: str, index: int, log: PartitionLog, leader_epoch: int = 0) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.leader_id = -1
        self.leader: LeaderState | None = None
        self._follower_hw = log.high_watermark

    # -- roles ----------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leader is not None

    @property
    def isr_size(self) -> int:
        return len(self.leader.isr) if self.leader is not None else 0

    def become_leader(
        self,
        local_id: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
        leader_epoch: int,
        partition_epoch: int,
        *,
        lag_time_max_ms: int,
        now_ms: int,
        min_insync_replicas: int = 1,
    ) -> None:
        """Lead ``leader_epoch`` (or take a new ISR and replica set within the epoch already led)."""
        if self.leader is not None and self.leader_epoch == leader_epoch:
            self.leader.on_replicas_changed(replicas, min_insync_replicas, now_ms)
            if self.leader.on_isr_committed(isr, partition_epoch):
                self.log.checkpoint_high_watermark(self.leader.high_watermark)
            return
        end = self.log.log_end_offset
        if self.log.latest_epoch < leader_epoch:
            self.log.assign_epoch(leader_epoch, end)  # KIP-279: the epoch starts at this leader's end
        self.leader_epoch = leader_epoch
        self.leader_id = local_id
        self.leader = self.leader_state_class.start(
            local_id,
            replicas,
            isr,
            leader_epoch,
            partition_epoch,
            log_end_offset=end,
            high_watermark=max(self.log.high_watermark, self._follower_hw),
            lag_time_max_ms=lag_time_max_ms,
            now_ms=now_ms,
            min_isr=min_insync_replicas,
        )
        if self.leader.on_local_append(end):  # e.g. a lone ISR member commits what it holds
            self.log.checkpoint_high_watermark(self.leader.high_watermark)

    def become_follower(self, leader_id: int, leader_epoch: int) -> None:
        if self.leader is not None:
            self._follower_hw = self.leader.high_watermark
        self.leader = None
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch

    @property
    def high_watermark(self) -> int:
        return self.leader.high_watermark if self.leader is not None else self._follower_hw

    def set_follower_high_watermark(self, hw: int) -> None:
        new = max(self._follower_hw, min(hw, self.log.log_end_offset))
        if new != self._follower_hw:
            self._follower_hw = new
            self.log.checkpoint_high_watermark(new)

    def diverging(self, last_fetched_epoch: int, fetch_offset: int) -> tuple[int, int] | None:
        """(epoch, end offset) when a follower's last epoch ends earlier here, or is unknown here."""
        if last_fetched_epoch < 0:
            return None
        epoch, end = self.log.end_offset_for_epoch(last_fetched_epoch)
        if epoch != last_fetched_epoch or end < fetch_offset:
            return epoch, end
        return None

    def on_follower_fetch(self, broker_id: int, fetch_offset: int, now_ms: int, broker_epoch: int = -1) -> bool:
        """Leader: record the position of a follower whose log matches ours below
        ``fetch_offset``; True if the high watermark moved."""
        if self.leader is None or not self.leader.on_follower_fetch(broker_id, fetch_offset, now_ms, broker_epoch):
            return False
        self.log.checkpoint_high_watermark(self.leader.high_watermark)
        return True

    def serve_follower_fetch(
        self,
        replica_id: int,
        replica_epoch: int,
        fetch_offset: int,
        last_fetched_epoch: int,
        max_bytes: int,
        now_ms: int,
    ) -> FollowerFetch:
        """Leader: answer follower ``replica_id`` (broker epoch ``replica_epoch``): divergence
        first, progress only for a matching fetch, then the read (see the module docstring)."""
        start = self.log.log_start_offset
        diverging = self.diverging(last_fetched_epoch, fetch_offset)
        if diverging is not None:
            read = ReadResult(b"", self.high_watermark, start, diverging=diverging if max_bytes > 0 else None)
            return FollowerFetch(read, high_watermark_moved=False)
        moved = self.on_follower_fetch(replica_id, fetch_offset, now_ms, replica_epoch)
        try:
            return FollowerFetch(self._read(fetch_offset, max_bytes, self.log.log_end_offset), moved)
        except OffsetOutOfRangeError as exc:
            return FollowerFetch(ReadResult(b"", self.high_watermark, start), moved, exc)

    def check_epoch(self, current_leader_epoch: int) -> None:
        """A fetch or produce that names a leader epoch must name ours (KIP-320)."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return
        if current_leader_epoch < self.leader_epoch:
            raise KetchError(
                f"{self.topic}-{self.index}: leader epoch {current_leader_epoch} is stale; "
                f"the current one is {self.leader_epoch}",
                code=ErrorCode.FENCED_LEADER_EPOCH,
            )
        raise KetchError(
            f"{self.topic}-{self.index}: leader epoch {current_leader_epoch} is newer than this "
            f"replica's {self.leader_epoch}",
            code=ErrorCode.UNKNOWN_LEADER_EPOCH,
        )

    def _check_leader(self, acks: int, min_insync_replicas: int) -> LeaderState:
        if self.leader is None:
            raise KetchError(
                f"this broker is not the leader of {self.topic}-{self.index} (leader: {self.leader_id})",
                code=ErrorCode.NOT_LEADER_OR_FOLLOWER,
            )
        if acks == -1 and self.isr_size < min_insync_replicas:
            raise KetchError(
                f"{self.topic}-{self.index} has {self.isr_size} in-sync replica(s); "
                f"min.insync.replicas is {min_insync_replicas}",
                code=ErrorCode.NOT_ENOUGH_REPLICAS,
            )
        return self.leader

    def transaction_to_verify(self, records: bytes) -> tuple[int, int] | None:
        """(producer id, epoch) when ``records`` is a transactional batch that would start a
        transaction here and that the producer state would accept: the coordinator must verify
        it first (KIP-890). None otherwise (also for bad input: ``append`` then refuses it)."""
        try:
            batches = recordbatch.split_batches(records)
        except recordbatch.BatchError:
            return None
        if len(batches) != 1:
            return None
        batch = IdempotentBatch.of(batches[0][0])
        if batch is None or batch.control:
            return None
        entry = self.log.producer_state.get(batch.producer_id)
        if not starts_transaction(entry, batch):
            return None
        if isinstance(self.log.producer_state.check(batch, ""), Refuse | Duplicate):
            return None
        return batch.producer_id, batch.epoch

    def append(
        self,
        records: bytes,
        *,
        max_message_bytes: int,
        acks: int,
        min_insync_replicas: int,
        sync: bool,
        transaction_verified: bool = False,
        require_keys: bool = False,
        max_decompressed_bytes: int = MAX_DECOMPRESSED_BATCH_BYTES,
    ) -> AppendResult:
        leader = self._check_leader(acks, min_insync_replicas)
        where = f"{self.topic}-{self.index}"
        batches = validate_batches(
            where,
            records,
            max_message_bytes=max_message_bytes,
            max_decompressed_bytes=max_decompressed_bytes,
            require_keys=require_keys,
        )
        idempotent = [b for header, _ in batches if (b := IdempotentBatch.of(header)) is not None]
        if len(idempotent) < len(batches) and any(header.is_transactional for header, _ in batches):
            raise KetchError(f"{where}: a transactional batch needs a producer id", code=ErrorCode.INVALID_RECORD)
        if idempotent:
            if len(batches) > 1:
                raise KetchError(
                    f"{where}: a produce request may carry one idempotent batch per partition and nothing "
                    f"else; this one has {len(batches)} batches",
                    code=ErrorCode.INVALID_RECORD,
                )
            verdict = self.log.producer_state.check(idempotent[0], where)
            if isinstance(verdict, Duplicate):
                return AppendResult(verdict.first_offset, verdict.last_offset, 0, 0, duplicate=True)
            if isinstance(verdict, Refuse):
                raise KetchError(verdict.message, code=verdict.code)
            batch = idempotent[0]
            if not transaction_verified and starts_transaction(self.log.producer_state.get(batch.producer_id), batch):
                raise KetchError(
                    f"{where}: producer {batch.producer_id} epoch {batch.epoch} starts a transaction here; the "
                    "transaction coordinator must verify it first (AddPartitionsToTxn)",
                    code=ErrorCode.INVALID_TXN_STATE,
                )
        return self._store(leader, [(header.records_count, view) for header, view in batches], len(records), sync)

    def _store(
        self, leader: LeaderState, batches: list[tuple[int, memoryview | bytes]], size: int, sync: bool
    ) -> AppendResult:
        base = next_offset = self.log.log_end_offset
        stored = []
        for count, view in batches:
            stored.append(recordbatch.assign(view, next_offset, self.leader_epoch))
            next_offset += count
        self.log.append(stored, sync=sync)
        if leader.on_local_append(self.log.log_end_offset):
            self.log.checkpoint_high_watermark(leader.high_watermark)
        return AppendResult(base, next_offset - 1, len(stored), size)

    def write_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        *,
        min_insync_replicas: int,
        timestamp_ms: int,
        sync: bool,
        transaction_version: int = TV2,
    ) -> AppendResult | None:
        """Leader: write the coordinator's transaction marker by the marker rule of its transaction
        version; None when it is a duplicate or stale one (nothing written; the answer is NONE)."""
        leader = self._check_leader(-1, min_insync_replicas)
        entry = self.log.producer_state.get(producer_id)
        verdict = marker_verdict(entry, producer_id, producer_epoch, transaction_version)
        if isinstance(verdict, SkipMarker):
            return None
        marker = recordbatch.build_marker_batch(producer_id, producer_epoch, commit, coordinator_epoch, timestamp_ms)
        return self._store(leader, [(1, marker)], len(marker), sync)

    @property
    def last_stable_offset(self) -> int:
        return last_stable_offset(self.log.producer_state, self.high_watermark, self.log.log_start_offset)

    @property
    def ongoing_transactions(self) -> int:
        return open_transactions(self.log.producer_state)

    def expire_producers(self, now_ms: int, expiration_ms: int = PRODUCER_ID_EXPIRATION_MS) -> int:
        """Forget producers idle for ``producer.id.expiration.ms`` (leader and follower alike; the
        broker's retention pass calls it with the wall clock, as record timestamps are wall time)."""
        return self.log.expire_producers(now_ms, expiration_ms)

    def read(self, offset: int, max_bytes: int, *, read_committed: bool = False) -> ReadResult:
        """A consumer's fetch: whole batches below the high watermark (read_committed: below the
        last stable offset, with the aborted transactions overlapping what is returned)."""
        lso = self.last_stable_offset
        if not read_committed:
            return self._read(offset, max_bytes, self.high_watermark, lso)
        result = self._read(offset, max_bytes, lso, lso)
        if not result.records:
            return result
        headers = recordbatch.iter_headers(result.records)
        aborted = self.log.aborted_transactions(offset, headers[-1].next_offset)
        return ReadResult(result.records, result.high_watermark, result.log_start_offset, None, lso, aborted)

    def _read(self, offset: int, max_bytes: int, limit: int, lso: int = -1) -> ReadResult:
        log = self.log
        start, end = log.log_start_offset, log.log_end_offset
        if max_bytes <= 0:
            return ReadResult(b"", self.high_watermark, start, last_stable_offset=lso)
        if not start <= offset <= end:
            raise OffsetOutOfRangeError(
                f"fetch offset {offset} is outside {self.topic}-{self.index}'s log [{start}, {end}]"
            )
        data = log.read(offset, max_bytes) if offset < limit else b""
        if data and limit < end:
            data = recordbatch.batches_below(data, limit)
        return ReadResult(data, self.high_watermark, start, last_stable_offset=lso)

    # -- follower ---------------------------------------------------------------

    def divergence_target(self, epoch: int, end_offset: int) -> int:
        """Where to truncate when the leader answers that our epochs diverge: it ends
        ``epoch`` (the largest it has <= our last) at ``end_offset``."""
        log = self.log
        local = log.end_offset_for_epoch(epoch) if epoch >= 0 else (-1, -1)
        entries = log.epoch_entries()
        first_start = entries[0][1] if entries else None
        return divergence_truncation(epoch, end_offset, local, log.log_end_offset, first_start)

    def apply_fetch_answer(self, answer: FetchAnswer) -> FollowerUpdate:
        """Follower: apply the leader's answer to one fetch (rules: replication/follower.py).

        Appends are not synced: the driver decides (one group commit per fetch round)."""
        log = self.log
        if self.is_leader or self.leader_epoch != answer.leader_epoch or log.log_end_offset != answer.fetch_offset:
            return FollowerUpdate()  # the replica changed role or moved while the fetch was out
        if answer.error == ErrorCode.OFFSET_OUT_OF_RANGE and log.log_end_offset < answer.log_start_offset:
            log.reset_to(answer.log_start_offset)
            note = f"leader starts at {answer.log_start_offset}, beyond our end; starting over there"
            return FollowerUpdate(changed=True, note=note)
        if answer.error:
            return FollowerUpdate()  # leadership errors: wait until the metadata image moves the replica
        if answer.diverging is not None:
            epoch, end = answer.diverging
            target = self.divergence_target(epoch, end)
            note = f"diverged at epoch {epoch} (leader ends it at {end}); truncating {log.log_end_offset} -> {target}"
            log.truncate_to(max(target, log.log_start_offset))
            return FollowerUpdate(changed=True, note=note)
        appended = False
        if answer.records:
            plan = plan_append(answer.records, log.log_end_offset)
            if plan.truncate_to is not None:
                log.truncate_to(plan.truncate_to)
            if plan.batches:
                log.append(plan.batches, sync=False)
                appended = True
        self.set_follower_high_watermark(answer.high_watermark)
        return FollowerUpdate(changed=appended, appended=appended)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= ``timestamp_ms``.

        Not the hot path: the one batch the log's time index points at is
        decoded to find the exact record.
        """
        batch = self.log.batch_for_timestamp(timestamp_ms)
        if batch is None:
            return None
        decoded = DefaultRecordBatch(batch)
        for record in decoded:
            if record.offset >= self.high_watermark:
                return None
            if record.timestamp >= timestamp_ms:
                return record.offset, record.timestamp
        return None
