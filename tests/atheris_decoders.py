"""Coverage-guided fuzzing of the byte decoders with atheris (libFuzzer), run by
tests/test_fuzz_atheris.py with ``KETCH_SLOW=1``; by hand:

    .venv/bin/python tests/atheris_decoders.py -runs=200000 -timeout=5

The first input byte picks the decoder, the rest is its input. Each decoder may return or raise
its documented typed error (the table in tests/test_fuzz_decoders.py); anything else escapes and
libFuzzer reports it as a crash with the input saved to ``crash-*``; ``-timeout`` reports a hang.
libFuzzer ends the process without running ``atexit``, so the inputs tried per decoder are
written as JSON to ``ATHERIS_COUNTS`` (a path, when set) every 1000 inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from coordinator.groups.records import decode_record as decode_group_record
    from coordinator.metadata.records import decode_batch
    from coordinator.metadata.snapshot import decode_snapshot
    from coordinator.raft_codec import entry_from_bytes, hard_state_from_bytes, snapshot_from_bytes
    from coordinator.transactions.records import decode_record as decode_txn_record
    from ketch.assignors.protocol import decode_assignment, decode_subscription
    from ketch.errors import CorruptMessageError
    from ketch.recordbatch import BatchError, iter_headers, marker_is_commit, split_batches
    from ketch.records import decode_batches
    from replication.compaction import CleanerCheckpoint
    from replication.epoch_cache import EpochCache
    from replication.follower import plan_append
    from replication.producer_state import ProducerEntry, ProducerStateTable

DECODERS: list[tuple[str, Callable[[bytes], Any], tuple[type[BaseException], ...]]] = [
    ("recordbatch.split_batches", split_batches, (BatchError,)),
    ("recordbatch.iter_headers", iter_headers, (BatchError,)),
    ("follower.plan_append", lambda b: plan_append(b, 0), (BatchError,)),
    ("recordbatch.marker_is_commit", marker_is_commit, (BatchError,)),
    ("records.decode_batches", lambda b: decode_batches("t", 0, b, 0, [(1, 0)]), (CorruptMessageError,)),
    ("assignors.protocol.decode_subscription", decode_subscription, (ValueError,)),
    ("assignors.protocol.decode_assignment", decode_assignment, (ValueError,)),
    ("groups.records.decode_record", lambda b: decode_group_record(b, b), (ValueError,)),
    ("transactions.records.decode_record", lambda b: decode_txn_record(b, b), (ValueError,)),
    ("metadata.records.decode_batch", decode_batch, (ValueError,)),
    ("metadata.snapshot.decode_snapshot", decode_snapshot, (ValueError,)),
    ("raft_codec.entry_from_bytes", entry_from_bytes, (ValueError,)),
    ("raft_codec.snapshot_from_bytes", snapshot_from_bytes, (ValueError,)),
    ("raft_codec.hard_state_from_bytes", hard_state_from_bytes, (ValueError,)),
    ("replication.EpochCache.decode", EpochCache.decode, (ValueError,)),
    ("replication.CleanerCheckpoint.decode", CleanerCheckpoint.decode, (ValueError,)),
    ("replication.ProducerEntry.decode", ProducerEntry.decode, (ValueError,)),
    ("replication.ProducerStateTable.decode", ProducerStateTable.decode, (ValueError,)),
]
COUNTS: Counter[str] = Counter()
OUT = os.environ.get("ATHERIS_COUNTS")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name, decode, allowed = DECODERS[data[0] % len(DECODERS)]
    COUNTS[name] += 1
    if COUNTS.total() % 1000 == 0 and OUT:
        with open(OUT, "w") as f:
            json.dump(dict(sorted(COUNTS.items())), f)
    with contextlib.suppress(*allowed):
        decode(data[1:])


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
