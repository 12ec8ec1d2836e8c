"""A real node killed with -9 in the middle of log cleaning keeps every record it must (issue 14).

One ``ketch node`` (``--log-cleaner-backoff-ms 200``, and ``--log-cleaner-chunk-rewrites
100`` so that a pass is many atomic writes) and one topic with
``cleanup.policy=compact``, ``min.cleanable.dirty.ratio=0.01`` and
``min.compaction.lag.ms=0`` (``delete.retention.ms`` is the default 24 h, so
no tombstone may go). Every write goes through ``ketch.Producer`` with
acks=all and is acknowledged before anything is killed; the offset of each
write is its acknowledgement's.

A pass over a few thousand batches takes ~0.1-0.3 s here, and a kill inside
it must be shown, so the test makes each pass big, knows when it starts, and
checks on disk where each kill fell. A cycle:

1. Pin: a transactional producer opens a transaction with one record. The
   cleaner never cleans past the last stable offset, so nothing written from
   here on is cleaned while the transaction is open.
2. Round: a plain producer writes versions of a random share of the keys (a
   few percent tombstones), shuffled, one record per batch. Then the
   transaction commits: the LSO jumps to the log end and the cleaner's next
   round (within the 200 ms backoff) plans one pass over the backlog. It
   removes several thousand batches, so it is applied in several atomic
   writes of ``CHUNK_BATCHES`` each, the checkpoint with the last.
3. Kill -9 inside the pass: wait until the metrics show it started
   (``ketch_log_cleaner_dirty_ratio`` of the partition at or above the topic's
   ratio: set by the pass's scan, set back to 0 once its last write landed),
   then until the node's RocksDB write-ahead log grows (no client writes now:
   the pass applied a chunk), then a random delay up to half the writing
   time of cycle 0's pass (which is not killed: it measures that).
4. With the node dead, open its RocksDB read-only (the product's
   ``RocksPartitionLog`` over it) and check the disk itself: ``check_compacted``
   finds nothing wrong (every key's latest record there), nothing the
   finished passes removed is back, and where the kill fell. A record gone
   that no finished pass removes (below the stored checkpoint C, a key's
   latest record below C is kept; from C on, everything is) and that was
   there at the previous look was removed by a chunk of a pass whose last
   write (the checkpoint) never landed: the kill fell between two atomic
   writes of one pass. Cycles go on until enough kills did.
5. Restart on the same data directory. The interrupted pass is planned again
   at once; kill that one too (steps 3-4), restart.

After the last restart: one more small round, a wait for a "cleaned ... up to
offset N" line of this process with N past everything written before it,
then the whole partition is read from the beginning with ``ketch.Consumer``:
``check_compacted`` finds nothing wrong (every record there is what was
written at that offset; every key's latest write is there at its acknowledged
offset, a tombstone as a null value), and the log shrank.

The control (``test_checker_flags_a_lost_latest_record``) shows the checker
can fail: the pure cleaner itself, its offset map made to forget one key's
latest offset, removes that latest record from a real ``RocksPartitionLog``
through ``clean_once``, and the same checker flags exactly that.
``KETCH_SLOW=1`` runs a longer version (more keys, more kills).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import rocksdict

from coordinator.metadata import TopicIdPartition
from ketch import Admin, Consumer, NewTopic, Producer, TopicPartition
from ketch.recordbatch import BatchHeader
from node.broker import _pid_key
from node.log_cleaner import Bounds, CleanerStats, clean_once
from node.process import NodeProcess
from replication import compaction
from replication.compaction import CleanerConfig
from replication.rocks_store import ALL_CFS, NodeStore
from tests.batches import keyed_batch, keyed_records
from tests.harness import start_node, wait_broker_alive

TOPIC = "compacted"
TP = TopicPartition(TOPIC, 0)
RATIO = 0.01
CONFIGS = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": str(RATIO), "min.compaction.lag.ms": "0"}
CLEANED = re.compile(rf"cleaned {TOPIC}-0 up to offset (\d+): (\d+) records, (\d+) bytes removed")
CHUNK_WAL_BYTES = 8192
Record = tuple[bytes | None, bytes | None]  # key, value (None: a tombstone)
Written = dict[int, Record]  # every acknowledged write, by offset
Stored = list[tuple[int, bytes | None, bytes | None]]  # offset, key, value in read order


@dataclass(frozen=True)
class Workload:
    keys: int
    share: float  # of the keys written in a round
    versions: int  # writes of each of those keys per round
    tombstones: float  # share of the writes that are tombstones
    batch_size: int  # producer batch.size in bytes: 60 holds one record
    min_cycles: int
    max_cycles: int
    between_writes: int  # kills that must be seen landing between two writes of one pass


CI = Workload(
    keys=2000, share=0.7, versions=3, tombstones=0.05, batch_size=60, min_cycles=2, max_cycles=6, between_writes=2
)
SLOW = Workload(
    keys=4000, share=0.7, versions=3, tombstones=0.05, batch_size=60, min_cycles=8, max_cycles=25, between_writes=8
)


def latest(written: Written) -> dict[bytes | None, int]:
    """Each key's last written offset."""
    out: dict[bytes | None, int] = {}
    for offset in sorted(written):
        out[written[offset][0]] = offset
    return out


def check_compacted(written: Written, stored: Stored) -> list[str]:
    """What is wrong with ``stored`` as a compaction of ``written``."""
    problems = []
    offsets = [offset for offset, _, _ in stored]
    if offsets != sorted(set(offsets)):
        problems.append("offsets are not strictly increasing")
    present = {offset: (key, value) for offset, key, value in stored}
    for offset, record in present.items():
        if written.get(offset) != record:
            problems.append(f"offset {offset} holds {record!r}, written: {written.get(offset)!r}")
    for key, offset in latest(written).items():
        if offset not in present:
            kind = "tombstone" if written[offset][1] is None else "value"
            problems.append(f"the latest {kind} of key {key!r} (offset {offset}) is gone")
    return problems


# -- the workload -------------------------------------------------------------------------------


def produce_round(node: NodeProcess, written: Written, rng: random.Random, load: Workload, round_no: int) -> None:
    keys = rng.sample(range(load.keys), int(load.keys * load.share))
    writes = [k for k in keys for _ in range(load.versions)]
    rng.shuffle(writes)
    producer = Producer(bootstrap_servers=node.bootstrap, acks="all", batch_size=load.batch_size, linger_ms=0)
    try:
        sent = []
        for i, k in enumerate(writes):
            key = b"k%06d" % k
            value = None if rng.random() < load.tombstones else b"r%d-%d-%d" % (round_no, k, i)
            sent.append((producer.send(TOPIC, value, key=key, partition=0), key, value))
        producer.flush(timeout=60)
        for future, key, value in sent:
            written[future.result(timeout=0).offset] = (key, value)
    finally:
        producer.close(timeout=10)


def pinned_round(node: NodeProcess, written: Written, rng: random.Random, load: Workload, round_no: int) -> None:
    """A round written while an open transaction holds the last stable offset, then its commit."""
    pin = Producer(bootstrap_servers=node.bootstrap, transactional_id="pin", linger_ms=0)
    try:
        pin.init_transactions()
        pin.begin_transaction()
        value = b"pin-%d" % round_no
        future = pin.send(TOPIC, value, key=b"pin", partition=0)
        pin.flush(timeout=30)
        produce_round(node, written, rng, load, round_no)
        pin.commit_transaction()
        written[future.result(timeout=0).offset] = (b"pin", value)
    finally:
        pin.close(timeout=10)


# -- watching the node ----------------------------------------------------------------------------


def dirty_ratio(node: NodeProcess) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    gauge = f'ketch_log_cleaner_dirty_ratio{{partition="0",topic="{TOPIC}"}} '
    return next((float(line[len(gauge) :]) for line in text.splitlines() if line.startswith(gauge)), 0.0)


def wait_for_pass(node: NodeProcess, timeout_s: float) -> bool:
    """True once the metrics show a pass under way (its scan set the gauge; its last write resets it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if dirty_ratio(node) >= RATIO:
            return True
        time.sleep(0.002)
    return False


def wal_bytes(node: NodeProcess) -> int:
    """Bytes in the node's RocksDB write-ahead log files: every write, the cleaner's too, lands there first."""
    total = 0
    for path in (node.data_dir / "rocksdb").glob("*.log"):
        with contextlib.suppress(FileNotFoundError):  # a WAL file retired meanwhile
            total += path.stat().st_size
    return total


def wait_for_write(node: NodeProcess, timeout_s: float) -> float:
    """Seconds until the WAL grows by a chunk's worth (no client writes now: the cleaner applied one), at most
    ``timeout_s``. A chunk deletes or rewrites 1,000 batches: at least ~15 bytes of WAL each; the node's other
    writes meanwhile (high-watermark checkpoints, controller metadata) are a few hundred bytes."""
    started = time.monotonic()
    before = wal_bytes(node)
    while wal_bytes(node) < before + CHUNK_WAL_BYTES and time.monotonic() - started < timeout_s:
        time.sleep(0.0005)
    return time.monotonic() - started


def wait_for_pass_end(node: NodeProcess, mark: int, end: int, timeout_s: float) -> None:
    """Until the node logged, after character ``mark`` of its log, a pass up to ``end`` or further."""
    deadline = time.monotonic() + timeout_s
    while not any(int(m.group(1)) >= end for m in CLEANED.finditer(node.log_text()[mark:])):
        assert time.monotonic() < deadline, f"no cleaning pass reached offset {end} in {timeout_s} s"
        time.sleep(0.05)


@dataclass(frozen=True)
class OnDisk:
    cleaned_offset: int
    log_end: int
    records: dict[int, Record]


def on_disk(node: NodeProcess, tip: TopicIdPartition) -> OnDisk:
    """The partition as the killed node left it, through a read-only RocksDB (the WAL is replayed in memory)."""
    path = str(node.data_dir / "rocksdb")
    families = {name: rocksdict.Options(raw_mode=True) for name in ALL_CFS}
    db = rocksdict.Rdict(
        path, rocksdict.Options(raw_mode=True), column_families=families, access_type=rocksdict.AccessType.read_only()
    )
    with NodeStore(path, db) as store:
        pid = store.meta_get(_pid_key(tip))
        assert pid is not None, f"no local replica of {tip}"
        plog = store.partition_log(int.from_bytes(pid, "big"))
        start, end = plog.log_start_offset, plog.log_end_offset
        records = keyed_records(plog.read(start, 1 << 30)) if end > start else {}
        return OnDisk(plog.cleaner_checkpoint.cleaned_offset, end, records)


def read_all(node: NodeProcess) -> Stored:
    with Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([TP])
        end = consumer.end_offsets([TP])[TP]
        consumer.seek_to_beginning(TP)
        out: Stored = []
        deadline = time.monotonic() + 60
        while consumer.position(TP) < end:
            assert time.monotonic() < deadline, f"read stalled at {consumer.position(TP)} of {end}"
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.offset, r.key, r.value) for r in records)
        return out


# -- the kills ----------------------------------------------------------------------------------


@dataclass
class Killer:
    """Kills the node inside passes and tells, from its disk, where each kill fell (steps 3-5)."""

    node: NodeProcess
    tip: TopicIdPartition
    written: Written
    rng: random.Random
    pass_s: float = 0.0  # cycle 0's pass, from the gauge going up to going down
    write_window_s: float = 0.0  # and from its first write (the WAL grew) to its end
    gone: set[int] = field(default_factory=set)  # written offsets missing at the previous look
    between_writes: int = 0  # kills after a pass's first write and before its last
    before_writes: int = 0  # kills after a pass's scan and before any of its writes landed
    lines: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def measure_pass(self, timeout_s: float) -> None:
        """Cycle 0, not killed: how long its pass and its writes take, as seen from here."""
        assert wait_for_pass(self.node, timeout_s), "the pass after the commit did not start"
        started = time.monotonic()
        wait_for_write(self.node, 10)
        writing = time.monotonic()
        while dirty_ratio(self.node) >= RATIO:
            time.sleep(0.001)
        ended = time.monotonic()
        self.pass_s, self.write_window_s = ended - started, ended - writing
        self.note(
            f"cycle 0: not killed; its pass was seen for {self.pass_s * 1000:.0f} ms, writing for the last "
            f"{self.write_window_s * 1000:.0f} ms"
        )

    def kill_during_pass(self, what: str, timeout_s: float) -> None:
        if not wait_for_pass(self.node, timeout_s):
            self.note(f"{what}: no pass started within {timeout_s} s; not killed")
            return
        waited = wait_for_write(self.node, 2 * self.pass_s + 1)
        delay = self.rng.uniform(0, self.write_window_s / 2)  # the window varies from pass to pass
        time.sleep(delay)
        self.node.kill()
        where = self.look(what)
        self.note(
            f"{what}: killed {waited * 1000:.0f} + {delay * 1000:.0f} ms after the pass was seen starting: {where}"
        )
        self.node.start()
        wait_broker_alive(self.node)

    def look(self, what: str) -> str:
        """Step 4: check the dead node's disk and say where the kill fell."""
        disk, written = on_disk(self.node, self.tip), self.written
        stored = [(o, k, v) for o, (k, v) in sorted(disk.records.items())]
        problems = check_compacted(written, stored)
        assert not problems, f"{what}: on the killed node's disk, {len(problems)} problems, first {problems[:3]}"
        # What the finished passes leave (the last stored checkpoint C): below C each key's latest record
        # below C; from C on, everything.
        below = latest({o: r for o, r in written.items() if o < disk.cleaned_offset})
        kept = {o for o in written if o < disk.log_end and (o >= disk.cleaned_offset or below[written[o][0]] == o)}
        back = sorted(set(disk.records) - kept)
        assert not back, f"{what}: records a finished pass removed are there: {back[:5]}"
        gone = kept - set(disk.records)
        unfinished = gone - self.gone
        self.gone = {o for o in written if o < disk.log_end and o not in disk.records}
        at = f"checkpoint {disk.cleaned_offset}, log end {disk.log_end}"
        if unfinished:
            self.between_writes += 1
            return f"between two writes of a pass ({at}; {len(unfinished)} records gone that no finished pass removes)"
        if disk.cleaned_offset < disk.log_end - 1:  # a finished pass ends at the last batch, the commit marker
            self.before_writes += 1
            return f"in the pass, before its first write ({at})"
        return f"after the pass ({at})"


def kill_mid_clean(tmp_path: Path, load: Workload, seed: int) -> None:
    rng = random.Random(seed)
    written: Written = {}
    node = start_node(tmp_path, extra_args=["--log-cleaner-backoff-ms", "200", "--log-cleaner-chunk-rewrites", "100"])
    try:
        with Admin(bootstrap_servers=node.bootstrap) as admin:
            admin.create_topics([NewTopic(TOPIC, 1, 1, CONFIGS)])
            tip = TopicIdPartition(admin.describe_topics([TOPIC])[0].topic_id, 0)
        killer = Killer(node, tip, written, rng)
        produce_round(node, written, rng, replace(load, share=1.0, versions=1, batch_size=16384), 0)
        pinned_round(node, written, rng, load, 0)
        killer.measure_pass(5)
        for cycle in range(1, load.max_cycles + 1):
            pinned_round(node, written, rng, load, cycle)
            killer.kill_during_pass(f"cycle {cycle}", 5)
            killer.kill_during_pass(f"cycle {cycle}, after the restart", 5)
            if cycle >= load.min_cycles and killer.between_writes >= load.between_writes:
                break
        report = "\n".join(killer.lines)
        assert killer.between_writes >= load.between_writes, "too few kills landed inside a pass:\n" + report

        before = max(written) + 1
        mark = len(node.log_text())
        produce_round(node, written, rng, replace(load, share=0.05, versions=1), -1)
        wait_for_pass_end(node, mark, before, 30)
        stored = read_all(node)
        problems = check_compacted(written, stored)
        assert not problems, f"{len(problems)} problems, first: {problems[:5]}"
        assert len(stored) < len(written) // 3, "the log did not shrink"
        assert f"cleaning {TOPIC}-0 failed" not in node.log_text()
        last = latest(written)
        tombstones = sum(1 for o in last.values() if written[o][1] is None)
        print(
            f"{len(written)} records written, {len(stored)} read back; {len(last)} keys, {tombstones} ending in a "
            f"tombstone; kills between two writes of a pass: {killer.between_writes}, in a pass before its first "
            f"write: {killer.before_writes}"
        )
    finally:
        node.close()


def test_kill_9_in_the_middle_of_cleaning_keeps_every_latest_record(tmp_path: Path) -> None:
    """Suite time: kept as is (~16 s on 2 cores): the only test of a kill -9 inside a cleaning
    pass, and already the short version (2,000 keys, at least 2 kills between two writes of a pass;
    ``test_kill_9_in_the_middle_of_cleaning_slow`` is the long one)."""
    kill_mid_clean(tmp_path, CI, seed=int(os.environ.get("KETCH_SEED", "14")))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KETCH_SLOW"), reason="long kill -9 run: set KETCH_SLOW=1")
@pytest.mark.timeout(1200)
def test_kill_9_in_the_middle_of_cleaning_slow(tmp_path: Path) -> None:
    kill_mid_clean(tmp_path, SLOW, seed=int(os.environ.get("KETCH_SEED", "1414")))


# -- the control --------------------------------------------------------------------------------


class ForgetfulOffsetMap(compaction.OffsetMap):
    """The planted bug: the offset map keeps one key's FIRST offset, so the cleaner drops its latest."""

    victim = b"k000007"

    def add(self, batch: bytes, header: BatchHeader, aborted: compaction.AbortedRanges) -> None:
        first = self.latest.get(self.victim)
        super().add(batch, header, aborted)
        if first is not None:
            self.latest[self.victim] = first


def test_checker_flags_a_lost_latest_record(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    written: Written = {}
    batches = []
    for base in range(0, 400, 4):
        records = [(b"k%06d" % rng.randrange(20), b"v%d" % (base + i)) for i in range(4)]
        written.update({base + i: r for i, r in enumerate(records)})
        batches.append(keyed_batch(base, list(records)))
    victim = latest(written)[ForgetfulOffsetMap.victim]
    assert victim < 396, "the victim's latest record must be below the last batch, which is never cleaned"

    def cleaned(forgetful: bool) -> Stored:
        with tempfile.TemporaryDirectory() as d, NodeStore.open(d) as store, monkeypatch.context() as patch:
            if forgetful:
                patch.setattr(compaction, "OffsetMap", ForgetfulOffsetMap)
            log = store.partition_log(0)
            log.append(batches)
            end = log.log_end_offset
            bounds = Bounds(end, end, log.generation, frozenset(), CleanerConfig(min_cleanable_dirty_ratio=0.0))
            assert clean_once(log, bounds, 1_000_000, CleanerStats(), (TOPIC, 0))
            return [(o, k, v) for o, (k, v) in sorted(keyed_records(log.read(0, 1 << 30)).items())]

    honest = cleaned(forgetful=False)
    assert check_compacted(written, honest) == []
    assert len(honest) < len(written) // 4
    assert check_compacted(written, cleaned(forgetful=True)) == [
        f"the latest value of key {ForgetfulOffsetMap.victim!r} (offset {victim}) is gone"
    ]
    # The same checker on a read-back with one latest record taken out, and with a value changed.
    assert check_compacted(written, [r for r in honest if r[0] != victim]) != []
    assert check_compacted(written, [(o, k, b"other") if o == victim else (o, k, v) for o, k, v in honest]) != []
