"""Unclean recovery (KIP-966, in small): who leads when every ISR member may have lost data.

The ISR floor (election.py) keeps ``min.insync.replicas`` members in every
ISR, so an acknowledged record survives any one broker. A broker that comes
back from an *unclean* shutdown (a kill, a crash, a power loss, a wiped disk:
its registration says ``previous_clean_shutdown=false``) may lack records it
once acknowledged, so its registration takes it out of every ISR (brokers.py)
— unless it is the ISR's last member. Then nobody in the ISR is known to hold
every committed record, and the partition enters recovery: offline, with
``recovering`` set, until this module picks a leader.

Rules:
- ``ReplicaLogs`` is the active controller's in-memory table of what each
  broker reported about its local replicas: (latest leader epoch, log end
  offset). A registration replaces everything its broker reported before (a
  new process may have lost its tail); a heartbeat updates the partitions it
  names (brokers report the replicas of recovering partitions). When a
  partition enters recovery, every earlier report on it is dropped: logs
  grow, so only reports made since count. Like broker sessions the table is
  not replicated: a newly active controller starts empty and learns again
  from heartbeats.
- ``recovery_records`` elects, for each recovering partition, once *every*
  replica has reported since the partition entered recovery: the replica
  with the best (latest epoch, log end offset) — the longest log of the
  newest epoch holds every record any leader acknowledged, if any replica
  does. It leads alone (ISR = [it], ``recovering`` cleared) once it is
  usable; the others truncate to it by leader epoch and rejoin. A replica
  that is down reports when it registers again; until every replica has
  reported, nobody leads: a replica that never comes back keeps the
  partition offline (KIP-966's "balanced" recovery). Ties go to replica
  order. A topic with ``unclean.leader.election.enable=true`` does not wait:
  any usable replica leads (election.py), as it would after any failure —
  also when the config is switched on while the partition waits here
  (``ketch topic alter-config T --set unclean.leader.election.enable=true``:
  the same batch elects it, configs.py).
- What is lost: recovery only runs after a second failure (the ISR had
  ``min.insync.replicas`` members and all but one restarted uncleanly or were
  fenced and restarted uncleanly). Records only the lost tails held are gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from coordinator.metadata import records as rec
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.records import MetadataRecord, TopicIdPartition

LogEnd = tuple[int, int]  # (latest leader epoch, log end offset)


class ReplicaLogs:
    def __init__(self) -> None:
        self._logs: dict[int, dict[TopicIdPartition, LogEnd]] = {}

    def replace(self, broker_id: int, logs: Mapping[TopicIdPartition, LogEnd]) -> None:
        self._logs[broker_id] = dict(logs)

    def update(self, broker_id: int, logs: Mapping[TopicIdPartition, LogEnd]) -> None:
        self._logs.setdefault(broker_id, {}).update(logs)

    def forget(self, tps: Iterable[TopicIdPartition]) -> None:
        """Drop every broker's report on ``tps`` (they enter recovery: only fresh reports count)."""
        gone = set(tps)
        for logs in self._logs.values():
            for tp in gone & logs.keys():
                del logs[tp]

    def get(self, broker_id: int, tp: TopicIdPartition) -> LogEnd | None:
        return self._logs.get(broker_id, {}).get(tp)

    def clear(self) -> None:
        self._logs.clear()


def recovery_records(image: MetadataImage, logs: ReplicaLogs) -> list[MetadataRecord]:
    """A leader for every recovering partition whose usable replicas have all reported."""
    out = []
    for t, index, p in image.all_partitions():
        if not p.recovering:
            continue
        tp = TopicIdPartition(t.topic_id, index)
        reports = {b: end for b in p.replicas if (end := logs.get(b, tp)) is not None}
        if len(reports) < len(p.replicas):
            continue  # any replica may hold what the others lack: hear from all of them
        best = max(reports, key=lambda b: (reports[b], -p.replicas.index(b)))
        if image.is_usable(best):
            out.append(rec.partition_change(t.topic_id, index, leader=best, isr=[best], recovering=False))
    return out
