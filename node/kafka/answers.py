"""What the group, admin, transaction and SASL handlers share: one service call and its error.

Rules:
- ``call`` runs ``ctx.call`` and turns a refusal (node/access.py raises ``KetchError`` with the
  rule's code, e.g. GROUP_AUTHORIZATION_FAILED) into ``Refused(code, message)``, which a handler
  answers as the API's error code, the same as an error in the protobuf answer. Anything else a
  call raises is a bug of the node: it propagates, and the server answers it as it answers any
  handler failure.
- ``code_of`` reads a protobuf ``ErrorCode`` field (an int); ``kafka_error`` (node/kafka/wire.py)
  makes it kio's enum. Ketch's codes are Kafka's numbers (ketch/errors.py).
- ``ms`` is a kio timedelta in whole milliseconds, as the protobuf requests carry them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from ketch.errors import KetchError
from node.kafka.context import KafkaContext


@dataclass(frozen=True)
class Refused:
    code: int
    message: str


async def call(ctx: KafkaContext, method: str, request: Any) -> Any:
    """The protobuf answer of ``method``, or ``Refused`` when the authorization rule refused it."""
    try:
        return await ctx.call(method, request)
    except KetchError as exc:
        return Refused(int(exc.code), exc.message)


def ms(value: datetime.timedelta) -> int:
    return int(value.total_seconds() * 1000)
