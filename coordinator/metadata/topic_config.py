"""Topic names and topic configs: the rules the controller enforces on CreateTopics.

Kafka's ``Topic.validate`` and ``TopicConfig``/``LogConfig``: one constant per
config key, spelled as Kafka spells it, for every place that names a key
(controller, brokers, tools). Only overrides are stored in metadata; the
broker merges them over its defaults at the moment of use (node/catalog.py).

Rules:
- Topic names follow Kafka: ``[A-Za-z0-9._-]``, 1 to 249 characters, not
  ``.`` or ``..`` → otherwise INVALID_TOPIC_EXCEPTION.
- Topic configs use Kafka's keys; an unknown key or a value of the wrong type
  or range is INVALID_CONFIG, naming the key and what is accepted:
  integers at or above their minimum (``max.message.bytes`` also at most the
  node's ``max_request_bytes``), ``unclean.leader.election.enable`` true or
  false in any case and spacing, stored lower-case.
- ``cleanup.policy`` is ``delete``, ``compact`` or both, comma-separated in
  either order, any case and spacing; stored as ``delete``, ``compact`` or
  ``compact,delete``. ``compact``: the log cleaner keeps the latest record of
  every key, and every produced record must have a key. ``delete``: retention
  by ``retention.ms`` and ``retention.bytes``; a compact-only topic has none.
- ``min.cleanable.dirty.ratio`` is a number in [0, 1], stored as Python's
  shortest float text (``".010"`` → ``"0.01"``, ``"1"`` → ``"1.0"``).
- Integers are stored normalised (``"007"`` → ``"7"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ketch.errors import ErrorCode, KetchError

RETENTION_MS = "retention.ms"  # -1 = forever
RETENTION_BYTES = "retention.bytes"  # -1 = unlimited
MAX_MESSAGE_BYTES = "max.message.bytes"  # largest record batch accepted
FLUSH_MESSAGES = "flush.messages"  # 1 = fsync every append, 0 = WAL only
MIN_INSYNC_REPLICAS = "min.insync.replicas"
CLEANUP_POLICY = "cleanup.policy"  # "delete", "compact" or "compact,delete"
UNCLEAN_LEADER_ELECTION_ENABLE = "unclean.leader.election.enable"
DELETE_RETENTION_MS = "delete.retention.ms"  # how long a tombstone outlives its cleaning
MIN_COMPACTION_LAG_MS = "min.compaction.lag.ms"  # a record younger than this is never cleaned
MIN_CLEANABLE_DIRTY_RATIO = "min.cleanable.dirty.ratio"  # dirty share of the log that starts a clean

COMPACT, DELETE = "compact", "delete"

# Integer keys -> smallest value accepted.
INT_MINIMUMS: dict[str, int] = {
    RETENTION_MS: -1,
    RETENTION_BYTES: -1,
    MAX_MESSAGE_BYTES: 1,
    FLUSH_MESSAGES: 0,
    MIN_INSYNC_REPLICAS: 1,
    DELETE_RETENTION_MS: 0,
    MIN_COMPACTION_LAG_MS: 0,
}
SUPPORTED_CONFIGS = (
    *INT_MINIMUMS,
    CLEANUP_POLICY,
    MIN_CLEANABLE_DIRTY_RATIO,
    UNCLEAN_LEADER_ELECTION_ENABLE,
)

MAX_TOPIC_NAME = 249
_LEGAL = re.compile(r"^[A-Za-z0-9._-]+$")


def validate_topic_name(name: str) -> None:
    if not name:
        raise KetchError("topic name is empty", code=ErrorCode.INVALID_TOPIC_EXCEPTION)
    if name in (".", ".."):
        raise KetchError(f"topic name {name!r} is not allowed", code=ErrorCode.INVALID_TOPIC_EXCEPTION)
    if len(name) > MAX_TOPIC_NAME:
        raise KetchError(
            f"topic name is {len(name)} characters; the limit is {MAX_TOPIC_NAME}",
            code=ErrorCode.INVALID_TOPIC_EXCEPTION,
        )
    if not _LEGAL.match(name):
        raise KetchError(
            f"topic name {name!r} has characters outside [A-Za-z0-9._-]",
            code=ErrorCode.INVALID_TOPIC_EXCEPTION,
        )


def validate_topic_configs(configs: Mapping[str, str], max_request_bytes: int) -> dict[str, str]:
    """Normalised overrides, or INVALID_CONFIG naming the offending key.

    ``unclean.leader.election.enable`` is checked after every other key, so it
    is reported (and stored) last.
    """
    out: dict[str, str] = {}
    for key, raw in configs.items():
        if key == UNCLEAN_LEADER_ELECTION_ENABLE:
            continue
        if key == CLEANUP_POLICY:
            out[key] = normalise_cleanup_policy(raw)
            continue
        if key == MIN_CLEANABLE_DIRTY_RATIO:
            out[key] = _ratio(key, raw)
            continue
        if key not in INT_MINIMUMS:
            raise KetchError(
                f"unknown topic config {key!r}; supported: {', '.join(SUPPORTED_CONFIGS)}",
                code=ErrorCode.INVALID_CONFIG,
            )
        minimum = INT_MINIMUMS[key]
        try:
            value = int(raw)
        except ValueError:
            raise KetchError(f"topic config {key}={raw!r} is not an integer", code=ErrorCode.INVALID_CONFIG) from None
        if value < minimum:
            raise KetchError(f"topic config {key}={value} must be >= {minimum}", code=ErrorCode.INVALID_CONFIG)
        if key == MAX_MESSAGE_BYTES and value > max_request_bytes:
            raise KetchError(
                f"{MAX_MESSAGE_BYTES}={value} exceeds the node's max_request_bytes={max_request_bytes}",
                code=ErrorCode.INVALID_CONFIG,
            )
        out[key] = str(value)
    if UNCLEAN_LEADER_ELECTION_ENABLE in configs:
        given = configs[UNCLEAN_LEADER_ELECTION_ENABLE]
        flag = given.strip().lower()
        if flag not in ("true", "false"):
            raise KetchError(
                f"topic config {UNCLEAN_LEADER_ELECTION_ENABLE}={given!r} must be true or false",
                code=ErrorCode.INVALID_CONFIG,
            )
        out[UNCLEAN_LEADER_ELECTION_ENABLE] = flag
    return out


def normalise_cleanup_policy(raw: str) -> str:
    """``delete``, ``compact`` or ``compact,delete`` (both, in either order); else INVALID_CONFIG."""
    parts = {part.strip().lower() for part in raw.split(",")}
    if not parts <= {COMPACT, DELETE}:
        raise KetchError(
            f"topic config {CLEANUP_POLICY}={raw!r} is not valid; accepted: {DELETE}, {COMPACT}, "
            f"or both ({COMPACT},{DELETE})",
            code=ErrorCode.INVALID_CONFIG,
        )
    return ",".join(sorted(parts))


def _ratio(key: str, raw: str) -> str:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise KetchError(f"topic config {key}={raw!r} must be a number from 0 to 1", code=ErrorCode.INVALID_CONFIG)
    return str(value)
