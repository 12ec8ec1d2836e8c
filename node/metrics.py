"""Prometheus metrics of one node, named after Kafka's JMX metrics.

    ketch_broker_topic_bytes_in_total{topic}      kafka.server:BrokerTopicMetrics BytesInPerSec
    ketch_broker_topic_bytes_out_total{topic}     ... BytesOutPerSec
    ketch_broker_topic_messages_in_total{topic}   ... MessagesInPerSec (from batch headers)
    ketch_request_latency_seconds{api}            kafka.network:RequestMetrics TotalTimeMs
    ketch_request_errors_total{api,error}         kafka.network:RequestMetrics ErrorsPerSec
    ketch_log_end_offset{topic,partition}         kafka.log:Log LogEndOffset
    ketch_log_start_offset{topic,partition}       kafka.log:Log LogStartOffset
    ketch_log_size_bytes{topic,partition}         kafka.log:Log Size
    ketch_high_watermark{topic,partition}         kafka.cluster:Partition (HW)
    ketch_last_stable_offset_lag{topic,partition} kafka.cluster:Partition LastStableOffsetLag (HW - LSO)
    ketch_ongoing_transactions{topic,partition}   open transactions on the partition (this replica's view)
    ketch_producer_id_count{topic,partition}      producer ids in the producer state (Kafka's ProducerIdCount)
    ketch_under_replicated_partitions             kafka.server:ReplicaManager UnderReplicatedPartitions
    ketch_follower_lag_offsets{...,follower}      kafka.server:FetcherLagMetrics ConsumerLag (leader's view)
    ketch_isr_shrinks_total / ketch_isr_expands_total   ReplicaManager IsrShrinksPerSec / IsrExpandsPerSec
    ketch_produce_waiting_for_acks                acks=all produce requests in purgatory
    ketch_fetch_waiting                           fetches parked in the fetch purgatory
    ketch_fetch_sessions                          follower fetch sessions held (NumIncrementalFetchSessions)

On a group coordinator (groups of the offsets partitions this broker leads):

    ketch_group_members{group}                    kafka.coordinator.group NumMembers (per group)
    ketch_group_rebalances_total{group}           generations completed (rebalances)
    ketch_group_committed_offset{group,topic,partition}
    ketch_consumer_lag{group,topic,partition}     high watermark minus committed offset (where this
                                                  broker has a replica of the partition)

On a transaction coordinator (transactional ids of the __transaction_state partitions it leads):

    ketch_transactions_ongoing                    kafka.coordinator.transaction (open transactions)
    ketch_transactions_ended_total{outcome}       committed, aborted (markers written) and timed_out
    ketch_transactional_ids                       transactional ids held here

The log cleaner (node/log_cleaner.py; Kafka's kafka.log:LogCleaner and LogCleanerManager):

    ketch_log_cleaner_runs_total                  cleaning passes applied
    ketch_log_cleaner_bytes_removed_total         bytes the cleaner removed
    ketch_log_cleaner_records_removed_total       records the cleaner removed
    ketch_log_cleaner_dirty_ratio{topic,partition}        dirty bytes / cleanable bytes at the last scan
    ketch_log_cleaner_oldest_uncleaned_age_seconds{topic,partition}  age of the oldest uncleaned record

On a controller (read from the quorum at scrape time):

    ketch_controller_active_count                 kafka.controller:KafkaController ActiveControllerCount
    ketch_raft_current_term                       kafka.server:raft-metrics current-epoch
    ketch_raft_commit_index                       ... high-watermark
    ketch_raft_leader_changes_total               leadership changes this node has seen
    ketch_controller_fenced_broker_count          ... FencedBrokerCount
    ketch_controller_offline_partitions_count     ... OfflinePartitionsCount
    ketch_reassignments_in_progress               ... ActiveReassignmentCount (partitions being moved)

A partition leader's reassignment throttle (node/replication_throttle.py):

    ketch_replication_throttled_bytes_total       bytes sent to replicas a reassignment is adding
    ketch_replication_throttled_fetches_total     their reads answered empty (the bucket was empty)
    ketch_replication_throttle_rate_bytes         the configured bytes/s (0: unlimited)

Per-partition gauges are read at scrape time by a collector, so the produce and
fetch paths pay only for the counters. Each node has its own registry (no
process-global state), served on ``metrics_port`` at ``/metrics``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.quorum import QuorumController
from node.isr_manager import IsrManager
from node.log_cleaner import CleanerStats
from node.replication_throttle import ReplicationThrottle
from replication.partition import Partition

R = TypeVar("R")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _LogCollector(Collector):
    def __init__(self, partitions: Callable[[], Iterable[Partition]]) -> None:
        self._partitions = partitions

    def collect(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        end = GaugeMetricFamily("ketch_log_end_offset", "Next offset to be written", labels=labels)
        hw = GaugeMetricFamily("ketch_high_watermark", "Offset below which records are committed", labels=labels)
        urp = GaugeMetricFamily(
            "ketch_under_replicated_partitions", "Partitions this broker leads whose ISR is smaller than replicas"
        )
        lag = GaugeMetricFamily(
            "ketch_follower_lag_offsets",
            "Leader log end minus the follower's, as the leader sees it",
            labels=[*labels, "follower"],
        )
        under = 0
        start = GaugeMetricFamily("ketch_log_start_offset", "First offset still stored", labels=labels)
        size = GaugeMetricFamily("ketch_log_size_bytes", "Bytes of stored record batches", labels=labels)
        lso_lag = GaugeMetricFamily(
            "ketch_last_stable_offset_lag", "High watermark minus the last stable offset", labels=labels
        )
        ongoing = GaugeMetricFamily("ketch_ongoing_transactions", "Open transactions on the partition", labels=labels)
        producers = GaugeMetricFamily(
            "ketch_producer_id_count", "Producer ids held in the partition's producer state", labels=labels
        )
        for p in self._partitions():
            key = [p.topic, str(p.index)]
            end.add_metric(key, p.log.log_end_offset)
            hw.add_metric(key, p.high_watermark)
            leader = p.leader
            if leader is not None:
                under += len(leader.isr) < len(leader.replicas)
                for follower in leader.followers.values():
                    if follower.log_end_offset >= 0:
                        lag.add_metric([*key, str(follower.broker_id)], leader.log_end_offset - follower.log_end_offset)
            start.add_metric(key, p.log.log_start_offset)
            size.add_metric(key, p.log.size_bytes)
            lso_lag.add_metric(key, p.high_watermark - p.last_stable_offset)
            ongoing.add_metric(key, p.ongoing_transactions)
            producers.add_metric(key, len(p.log.producer_state))
        urp.add_metric([], under)
        yield from (end, start, size, hw, urp, lag, lso_lag, ongoing, producers)


class _ControllerCollector(Collector):
    def __init__(self, quorum: QuorumController) -> None:
        self._quorum = quorum

    def collect(self) -> Iterator[Metric]:
        q = self._quorum
        status = q.raft_status() if q.raft is not None else None
        image = q.image
        values = [
            ("ketch_controller_active_count", "1 on the active controller", 1 if q.active else 0),
            ("ketch_raft_current_term", "Raft term", status.term if status else 0),
            ("ketch_raft_commit_index", "Raft commit index", status.commit if status else 0),
            ("ketch_controller_fenced_broker_count", "Registered brokers that are fenced", image.fenced_broker_count),
            (
                "ketch_controller_offline_partitions_count",
                "Partitions without a leader",
                image.offline_partition_count,
            ),
            ("ketch_reassignments_in_progress", "Partitions being moved", image.reassigning_partition_count),
            (
                "ketch_raft_voters",
                "Voters of the controller quorum, as this node knows them",
                len(status.voters) if status else 0,
            ),
            (
                "ketch_raft_observers",
                "Replicas the Raft leader replicates to that are not voters (0 elsewhere)",
                len(status.observers) if status else 0,
            ),
            (
                "ketch_raft_is_voter",
                "1 if this controller is a voter, 0 if an observer",
                int(status.is_voter) if status else 0,
            ),
        ]
        for name, doc, value in values:
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily("ketch_raft_leader_changes", "Raft leadership changes seen", value=q.leader_changes)


class _CleanerCollector(Collector):
    def __init__(self, stats: CleanerStats, clock_s: Callable[[], float]) -> None:
        self._stats = stats
        self._clock_s = clock_s

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield CounterMetricFamily("ketch_log_cleaner_runs", "Cleaning passes applied", value=s.runs)
        yield CounterMetricFamily("ketch_log_cleaner_bytes_removed", "Bytes the cleaner removed", value=s.bytes_removed)
        yield CounterMetricFamily(
            "ketch_log_cleaner_records_removed", "Records the cleaner removed", value=s.records_removed
        )
        labels = ["topic", "partition"]
        ratio = GaugeMetricFamily("ketch_log_cleaner_dirty_ratio", "Dirty bytes over cleanable bytes", labels=labels)
        age = GaugeMetricFamily(
            "ketch_log_cleaner_oldest_uncleaned_age_seconds", "Age of the oldest uncleaned record", labels=labels
        )
        now_s = self._clock_s()
        for (topic, index), (dirty, oldest_ms) in list(s.dirty.items()):
            ratio.add_metric([topic, str(index)], dirty)
            age.add_metric([topic, str(index)], max(now_s - oldest_ms / 1000, 0.0) if oldest_ms is not None else 0.0)
        yield from (ratio, age)


class _ThrottleCollector(Collector):
    def __init__(self, throttle: ReplicationThrottle) -> None:
        self._throttle = throttle

    def collect(self) -> Iterator[Metric]:
        t = self._throttle
        yield CounterMetricFamily(
            "ketch_replication_throttled_bytes", "Bytes sent to replicas being added", value=t.throttled_bytes
        )
        yield CounterMetricFamily(
            "ketch_replication_throttled_fetches", "Throttled reads answered empty", value=t.delayed_fetches
        )
        yield GaugeMetricFamily("ketch_replication_throttle_rate_bytes", "Throttle rate, bytes/s", value=t.rate_bytes)


class _IsrCollector(Collector):
    def __init__(self, isr: IsrManager) -> None:
        self._isr = isr

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "ketch_isr_shrinks", "ISR shrinks this broker proposed and got", value=self._isr.shrinks
        )
        yield CounterMetricFamily(
            "ketch_isr_expands", "ISR expands this broker proposed and got", value=self._isr.expands
        )


class _GroupCollector(Collector):
    def __init__(self, groups: GroupMetricsSource) -> None:
        self._groups = groups

    def collect(self) -> Iterator[Metric]:
        members = GaugeMetricFamily("ketch_group_members", "Members of each group", labels=["group"])
        for group, count in sorted(self._groups.member_counts().items()):
            members.add_metric([group], count)
        yield members
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily("ketch_group_committed_offset", "Committed offset", labels=labels)
        lag = GaugeMetricFamily("ketch_consumer_lag", "High watermark minus committed offset", labels=labels)
        for group, topic, partition, offset, behind in self._groups.lags():
            committed.add_metric([group, topic, str(partition)], offset)
            if behind is not None:
                lag.add_metric([group, topic, str(partition)], behind)
        yield committed
        yield lag


def timed(api: str) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Decorate a gRPC handler of an object with ``metrics: NodeMetrics``: time it into
    ``ketch_request_latency_seconds{api}``."""

    def wrap(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def timed_call(self: Any, request: Any, context: Any) -> R:
            started = time.perf_counter()
            try:
                return await method(self, request, context)
            finally:
                self.metrics.request_latency.labels(api).observe(time.perf_counter() - started)

        return timed_call

    return wrap


class GroupMetricsSource(Protocol):
    def member_counts(self) -> dict[str, int]: ...
    def lags(self) -> list[tuple[str, str, int, int, int | None]]: ...


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.bytes_in = Counter("ketch_broker_topic_bytes_in", "Record bytes produced", ["topic"], registry=r)
        self.bytes_out = Counter("ketch_broker_topic_bytes_out", "Record bytes fetched", ["topic"], registry=r)
        self.messages_in = Counter("ketch_broker_topic_messages_in", "Records produced", ["topic"], registry=r)
        self.request_latency = Histogram(
            "ketch_request_latency_seconds",
            "Request time by API",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_errors = Counter(
            "ketch_request_errors", "Per-partition errors by API and code", ["api", "error"], registry=r
        )
        self.fetch_waiting = Gauge("ketch_fetch_waiting", "Fetches waiting for data", registry=r)
        self.produce_waiting = Gauge(
            "ketch_produce_waiting_for_acks", "acks=all produce requests waiting for the ISR", registry=r
        )
        self.group_rebalances = Counter(
            "ketch_group_rebalances", "Group generations completed, by group", ["group"], registry=r
        )
        self.transactions_ended = Counter(
            "ketch_transactions_ended", "Transactions completed, by outcome", ["outcome"], registry=r
        )

    def watch_replicas(self, partitions: Callable[[], Iterable[Partition]], isr: IsrManager | None = None) -> None:
        """Export the per-partition gauges (read at scrape time) and the ISR change counters."""
        self.registry.register(_LogCollector(partitions))
        if isr is not None:
            self.registry.register(_IsrCollector(isr))

    def watch_throttle(self, throttle: ReplicationThrottle) -> None:
        """Export the reassignment throttle's counters (read at scrape time)."""
        self.registry.register(_ThrottleCollector(throttle))

    def watch_cleaner(self, stats: CleanerStats) -> None:
        """Export the log cleaner's counters and per-partition gauges (read at scrape time)."""
        self.registry.register(_CleanerCollector(stats, time.time))

    def watch_controller(self, quorum: QuorumController) -> None:
        """Export the controller's and its Raft node's gauges (read at scrape time)."""
        self.registry.register(_ControllerCollector(quorum))

    def watch_groups(self, groups: GroupMetricsSource) -> None:
        """Export the group coordinator's gauges (node/group_coordinator.py)."""
        self.registry.register(_GroupCollector(groups))

    def watch_transactions(self, ongoing: Callable[[], int], transactional_ids: Callable[[], int]) -> None:
        """Export the transaction coordinator's gauges (node/txn_coordinator.py), read at scrape time."""
        Gauge("ketch_transactions_ongoing", "Open transactions", registry=self.registry).set_function(ongoing)
        Gauge("ketch_transactional_ids", "Transactional ids held", registry=self.registry).set_function(
            transactional_ids
        )

    def watch_fetch_sessions(self, sessions: Callable[[], int]) -> None:
        """Export how many follower fetch sessions this node leads (node/fetch_session.py), read at scrape time."""
        Gauge(
            "ketch_fetch_sessions", "Follower fetch sessions held by this leader", registry=self.registry
        ).set_function(sessions)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; return the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
