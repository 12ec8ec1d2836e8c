"""kill -9 a node in the middle of a produce run: every acknowledged record survives.

100,000 records go out with acks=1 through the real client while the test
counts acknowledgements; once at least half are acknowledged the node is
killed with SIGKILL (no shutdown path runs), restarted on the same data
directory, and the whole partition is read back. Every acknowledged record
must be there, at the offset its acknowledgement named, in order; records
whose sends failed with the crash may or may not be there (they were never
acknowledged), but nothing may appear that was never sent.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ketch import Admin, Consumer, NewTopic, Producer, RecordMetadata, TopicPartition
from ketch.errors import KetchError
from tests.harness import start_node, wait_broker_alive

TOTAL = 100_000


def _ack(on_ack: Callable[[bytes, int], None], value: bytes, metadata: RecordMetadata) -> None:
    on_ack(value, metadata.offset)


def test_acknowledged_records_survive_kill_9(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        with Admin(bootstrap_servers=node.bootstrap) as admin:
            admin.create_topics([NewTopic("crash", 1, 1)])
        acked: dict[int, bytes] = {}  # offset -> value
        lock = threading.Lock()
        half = threading.Event()

        def on_ack(value: bytes, offset: int) -> None:
            with lock:
                acked[offset] = value
                if len(acked) >= TOTAL // 2:
                    half.set()

        producer = Producer(bootstrap_servers=node.bootstrap, acks=1, linger_ms=2, retries=0, delivery_timeout_ms=5000)
        try:
            for i in range(TOTAL):
                value = b"r%06d" % i
                future = producer.send("crash", value, partition=0)
                future.add_callback(functools.partial(_ack, on_ack, value))
                if i == TOTAL * 3 // 4:
                    assert half.wait(60), "half of the records were not acknowledged in time"
                    node.kill()
            with contextlib.suppress(KetchError):  # sends cut off by the crash fail; that is expected
                producer.flush(timeout=30)
        finally:
            producer.close(timeout=5)
        with lock:
            acknowledged = dict(acked)
        assert len(acknowledged) >= TOTAL // 2

        node.start()
        wait_broker_alive(node)
        tp = TopicPartition("crash", 0)
        with Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([tp])
            end = consumer.end_offsets([tp])[tp]
            stored: list[tuple[int, bytes | None]] = []
            while len(stored) < end:
                for records in consumer.poll(timeout_ms=1000).values():
                    stored.extend((r.offset, r.value) for r in records)
        assert [offset for offset, _ in stored] == list(range(end)), "offsets not contiguous from 0"
        by_offset = dict(stored)
        missing = [o for o in acknowledged if by_offset.get(o) != acknowledged[o]]
        assert not missing, f"{len(missing)} acknowledged records lost or changed, first at offset {missing[0]}"
        sent = {b"r%06d" % i for i in range(TOTAL)}
        assert all(value in sent for _, value in stored), "a record that was never sent"
        values = [value or b"" for _, value in stored]
        assert values == sorted(values), "records out of send order"
        print(f"acknowledged {len(acknowledged)}, stored {end} after kill -9")
    finally:
        node.close()


def test_registration_says_whether_the_previous_process_shut_down_cleanly(tmp_path: Path) -> None:
    """The clean-shutdown marker (node/clean_shutdown.py) through real restarts: SIGTERM leaves it,
    kill -9 does not, and the controller hears which (KIP-966)."""
    node = start_node(tmp_path)
    try:

        def registrations() -> list[str]:
            return [
                line
                for line in node.log_text().splitlines()
                if "broker 1 registered with epoch" in line and "shutdown" in line
            ]

        def restarted_registration() -> str:
            seen = len(registrations())
            node.start()
            deadline = time.monotonic() + 30
            while len(registrations()) == seen:  # the old registration may still look alive: wait for the new
                assert time.monotonic() < deadline, "the restarted broker did not register"
                time.sleep(0.05)
            return registrations()[-1]

        wait_broker_alive(node)
        assert registrations()[-1].endswith("after an unclean shutdown")  # a new data directory
        assert node.stop() == 0
        assert restarted_registration().endswith("after a clean shutdown")
        node.kill()
        assert restarted_registration().endswith("after an unclean shutdown")
    finally:
        node.close()
