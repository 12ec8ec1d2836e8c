"""``TopicPartition``: the one (topic, partition) type of Ketch.

The client API (``ketch.TopicPartition``), the assignors and the group
coordinator all use this class, so a partition read from an assignment, a
committed offset or a fetch compares and hashes equal everywhere. It is a
``NamedTuple``, so a plain ``(topic, partition)`` tuple compares equal too.
This module imports nothing, so pure code may use it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TopicPartition"]


class TopicPartition(NamedTuple):
    topic: str
    partition: int
