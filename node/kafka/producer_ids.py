"""InitProducerId (v0-4) on the Kafka listener: the broker's ``InitProducerId``.

Rules:
- Without a transactional id: a new producer id with epoch 0 from the broker's block (an
  idempotent producer); with one: the transaction coordinator's answer (fencing the previous
  epoch, KIP-98), on the broker the client asked (it found the coordinator with FindCoordinator).
- v3+ carries the producer's current id and epoch (KIP-360) and they are passed on; -1/-1 before.
- Errors come back as the response's error code with producer id -1 and epoch -1; an
  authorization refusal likewise.
"""

from __future__ import annotations

from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import KetchError
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, kafka_error, millis
from node.topic_admin import error_fields


async def handle_init_producer_id(request: Any, ctx: KafkaContext) -> Any:
    call = pb.InitProducerIdRequest(
        transactional_id=request.transactional_id or "",
        transaction_timeout_ms=millis(request.transaction_timeout),
        producer_id=getattr(request, "producer_id", -1),
        producer_epoch=getattr(request, "producer_epoch", -1),
    )
    try:
        answer = await ctx.call("InitProducerId", call)
    except KetchError as exc:
        code, message = error_fields(exc)
        answer = pb.InitProducerIdResponse(error_code=code, error_message=message, producer_id=-1, producer_epoch=-1)
    failed = answer.error_code != 0
    return build(
        ctx.response_type,
        error_code=kafka_error(answer.error_code),
        producer_id=-1 if failed else answer.producer_id,
        producer_epoch=-1 if failed else answer.producer_epoch,
    )


APIS = [Api(22, "InitProducerId", 0, 4, handle_init_producer_id)]
