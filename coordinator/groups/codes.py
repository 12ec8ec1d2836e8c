"""Error codes the group coordinator answers with (Kafka's numbers).

``ketch.errors.ErrorCode`` does not have the group codes yet; until they are
added there (and to the ``ErrorCode`` enum in ketch.proto), they live here
with the same numbers Kafka uses, so moving them is a rename. ``NONE`` and
``INVALID_REQUEST`` are the existing codes, repeated so responses need one
enum only.
"""

from __future__ import annotations

from enum import IntEnum


class GroupError(IntEnum):
    NONE = 0
    OFFSET_METADATA_TOO_LARGE = 12  # commit metadata longer than offset.metadata.max.bytes
    COORDINATOR_LOAD_IN_PROGRESS = 14  # driver: the offsets partition is still being replayed
    COORDINATOR_NOT_AVAILABLE = 15  # the group is being deleted (Dead); retry after finding the coordinator
    NOT_COORDINATOR = 16  # driver: this broker does not lead the group's offsets partition
    ILLEGAL_GENERATION = 22  # the request's generation is not the group's current one
    INCONSISTENT_GROUP_PROTOCOL = 23  # protocol type differs, or no protocol in common with the group
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25  # not a member (never joined, left, or its session expired)
    INVALID_SESSION_TIMEOUT = 26  # outside group.min/max.session.timeout.ms
    REBALANCE_IN_PROGRESS = 27  # rejoin: the group is rebalancing
    INVALID_REQUEST = 42
    NON_EMPTY_GROUP = 68  # delete/reset refused: the group has members
    GROUP_ID_NOT_FOUND = 69
