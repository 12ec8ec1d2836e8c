"""``python -m bench follower-fetch``: a leader's CPU per partition for a follower's fetch, in-process.

    python -m bench follower-fetch [--partitions 1000] [--rounds 300]

What it measures (issue 15's 1,000 partitions; the fetch path of node/fetch_service.py):
1. a real ``Broker`` (node/broker.py) on a real RocksDB store in a temporary directory, as
   broker 1 of three, takes an image with one topic of ``--partitions`` partitions and
   replication factor 3 (from ``coordinator.metadata.Controller``): it leads about a third of
   them; each led partition gets one batch of three records;
2. follower 2 and follower 3 fetch everything, so both hold every record and the leader's
   high watermark stands at its log end: from then on nothing is new;
3. follower 2's fetch, with nothing new, is timed ``--rounds`` times (best of five) through
   ``FetchHandlers.Fetch`` with ``max_wait_ms`` 0: without a session (every led partition
   named and read), then in a fetch session (node/fetch_session.py) that names nothing
   (every partition counted as fetched again, none read);
4. prints both as microseconds per led partition and milliseconds per fetch, and their ratio.

No network and no node process: the figure is the leader's own work per fetch, the part that
grows with the number of partitions a follower follows.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from coordinator.metadata import Controller, ControllerConfig, ControllerResult, MetadataImage
from ketch.api.v1 import ketch_pb2 as pb
from ketch.recordbatch import assign
from node.broker import Broker
from node.config import NodeConfig
from node.fetch_service import FetchHandlers
from node.fetch_session import FetchSessions, FetchState, FollowerSession, Key
from node.fetch_waiters import FetchWaiters
from node.lifecycle import BrokerEpoch
from node.metrics import NodeMetrics
from node.replica_fetcher import fetch_request, fetch_state
from replication.partition import Partition
from replication.rocks_store import NodeStore

SUMMARY = "in-process: a leader's CPU per partition for a follower fetch, with and without a fetch session"
BROKERS = (1, 2, 3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=1000, help="partitions of the topic (default 1000)")
    parser.add_argument("--rounds", type=int, default=300, help="fetches per timing (default 300; best of five)")
    parser.set_defaults(handler=follower_fetch_handler)


def cluster_image(partitions: int) -> tuple[MetadataImage, dict[int, int]]:
    """The image of three registered brokers and one topic ``t``, and each broker's epoch."""
    ctl = Controller(ControllerConfig())
    offset = 0

    def run(result: ControllerResult[Any]) -> Any:
        nonlocal offset
        if result.records:
            offset += 1
            ctl.replay_batch(offset, result.records)
        return result.response

    for b in BROKERS:
        run(ctl.register_broker(b, f"bench-{b}", "127.0.0.1", 9000 + b, "", now_ms=0))
    epochs = {b: ctl.image.brokers[b].epoch for b in BROKERS}
    for b in BROKERS:
        run(ctl.broker_heartbeat(b, epochs[b], offset, now_ms=0))
    run(ctl.create_topic("t", partitions, 3, topic_id="bench-t", start_index=0))
    return ctl.image, epochs


class Leader(FetchHandlers):
    """Broker 1 with the node's fetch handlers (node/service.py's mixin), no gRPC."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.waiters = FetchWaiters()
        self.fetch_sessions = FetchSessions(self.waiters)
        self.metrics = NodeMetrics()

    def _count_error(self, api: str, code: int) -> None:
        raise RuntimeError(f"the benchmark's fetch got error {code}")


def batch(base_offset: int, leader_epoch: int) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i in range(3):
        builder.append(i, timestamp=0, key=None, value=b"v" * 100, headers=[])
    return assign(bytes(builder.build()), base_offset, leader_epoch)


def caught_up_states(led: list[Partition]) -> dict[Key, FetchState]:
    """A follower's fetch state of every led partition when it holds all of it (its high watermark at the log end)."""
    out = {}
    for part in led:
        offset, leader_epoch, last_epoch, _ = fetch_state(part)
        out[(part.topic, part.index)] = (offset, leader_epoch, last_epoch, offset)
    return out


def best_seconds(loop: asyncio.AbstractEventLoop, leader: Leader, requests: Any, rounds: int) -> float:
    """The best of five timings of ``rounds`` fetches (``requests()`` gives each one's request)."""
    best = float("inf")
    for _ in range(5):
        batch_of = [requests() for _ in range(rounds)]
        started = time.perf_counter()
        for request in batch_of:
            response = loop.run_until_complete(leader.Fetch(request, None))
            if response.error_code or response.partitions:
                raise RuntimeError(f"nothing was new, yet the fetch answered: {response}")
        best = min(best, time.perf_counter() - started)
    return best / rounds


def follower_fetch_handler(args: argparse.Namespace) -> int:
    image, epochs = cluster_image(args.partitions)
    with tempfile.TemporaryDirectory(prefix="ketch-bench-fetch-") as path, NodeStore.open(path) as store:
        epoch = BrokerEpoch()
        epoch.value = epochs[1]
        broker = Broker(NodeConfig(node_id=1), store, epoch, lambda t, i: None)
        broker.on_metadata(MetadataImage(), image)
        led = sorted((p for p in broker.replicas().values() if p.is_leader), key=lambda p: p.index)
        for part in led:
            part.append(
                batch(0, part.leader_epoch), max_message_bytes=1 << 20, acks=1, min_insync_replicas=1, sync=False
            )
        leader = Leader(broker)
        loop = asyncio.new_event_loop()
        try:
            states = caught_up_states(led)
            every = list(states)
            for follower in (2, 3):  # both hold everything: the high watermark reaches the log end
                request = fetch_request(follower, epochs[follower], 0, every, states, None)
                loop.run_until_complete(leader.Fetch(request, None))
            full = fetch_request(2, epochs[2], 0, every, states, None)
            sessionless = best_seconds(loop, leader, lambda: full, args.rounds)

            session = FollowerSession()
            opening = fetch_request(2, epochs[2], 0, every, states, session, 0)
            session.answered(states, every, loop.run_until_complete(leader.Fetch(opening, None)))

            # built ahead of the timed fetches (best_seconds), so the session moves on as if each was answered
            def incremental() -> pb.FetchRequest:  # names nothing: nothing changed on the follower
                epoch, named = session.plan(states)
                request = fetch_request(2, epochs[2], 0, named, states, session, epoch)
                session.answered(states, named, pb.FetchResponse(session_id=session.session_id))
                return request

            in_session = best_seconds(loop, leader, incremental, args.rounds)
        finally:
            loop.close()
    n = len(led)
    print(f"broker 1 leads {n} of {args.partitions} partitions (replication factor 3); follower 2 holds all of them")
    print(f"{'follower fetch, nothing new':40} {'us per partition':>17} {'ms per fetch':>13}")
    for name, seconds in (
        ("every partition named (no session)", sessionless),
        ("in a session, none named", in_session),
    ):
        print(f"{name:40} {seconds * 1e6 / n:17.2f} {seconds * 1e3:13.2f}")
    print(f"a session fetch costs {in_session / sessionless:.2f} of a sessionless one")
    return 0
