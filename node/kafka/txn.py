"""Kafka's transaction APIs on the Kafka listener, translated to the ketch.v1 transaction calls.

InitProducerId is kafka-core's (node/kafka/producer_ids.py); these are the calls a
transactional producer makes to its transaction coordinator (node/txn_service.py) and, for
TxnOffsetCommit, to the group coordinator (node/group_service.py).

Rules:
- AddPartitionsToTxn v0-3 (one transaction per request). Ketch answers one code for the whole
  call, so every partition carries it (Kafka would mark the ones it did not try
  OPERATION_NOT_ATTEMPTED; either way the producer retries or aborts the whole call). v4+ is the
  brokers' batched verification form and is not served: Ketch's leaders verify over gRPC.
- AddOffsetsToTxn v0-4, TxnOffsetCommit v0-5: v3+ carries the consumer's generation and member
  id (KIP-447), older versions send none (generation -1, member ""), which the group coordinator
  takes as a commit from outside the group protocol.
- EndTxn v0-5 with Kafka's transaction versions (coordinator/transactions/coordinator.py):
  v5 is transaction version 2 (TV2, ``transaction_version=2``): the transaction ends with a
  producer epoch bump and v5 answers the new id and epoch, which the client uses. v0-4 is TV1
  (``transaction_version=1``): the epoch stays, as these clients (every Python Kafka client and
  librdkafka) never learn a new one, so one producer runs any number of transactions. TV1 gives
  up KIP-890 part 2's protection against a delayed marker of one transaction ending the next
  (KAFKA-17754); Kafka accepts that for these clients too.
- PRODUCER_FENCED (90, KIP-588) is INVALID_PRODUCER_EPOCH (47) for the versions before it
  (AddPartitionsToTxn, AddOffsetsToTxn and EndTxn below v2, TxnOffsetCommit below v3): an older
  client knows only 47 as "fenced" (aiokafka takes an unknown code for a bug and stops).
"""

from __future__ import annotations

from typing import Any

from coordinator.transactions import TV1, TV2
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.kafka.answers import Refused, call
from node.kafka.context import Api, KafkaContext
from node.kafka.groups import commit_answers, committed_offsets
from node.kafka.wire import build, kafka_error, nested

# The first version of each API whose clients know PRODUCER_FENCED (KIP-588).
KNOWS_PRODUCER_FENCED = {"AddPartitionsToTxn": 2, "AddOffsetsToTxn": 2, "EndTxn": 2, "TxnOffsetCommit": 3}


def code_of(answer: Any) -> int:
    """The code of a transaction call: the refusal's, or the answer's ``error_code``."""
    return answer.code if isinstance(answer, Refused) else int(answer.error_code)


def for_version(code: int, api: str, version: int) -> int:
    """``code`` as a client of ``api`` at ``version`` understands it (KIP-588's fencing code)."""
    if code == ErrorCode.PRODUCER_FENCED and version < KNOWS_PRODUCER_FENCED[api]:
        return int(ErrorCode.INVALID_PRODUCER_EPOCH)
    return code


async def add_partitions_to_txn(request: Any, ctx: KafkaContext) -> Any:
    topics = request.v3_and_below_topics
    answer = await call(
        ctx,
        "AddPartitionsToTxn",
        pb.AddPartitionsToTxnRequest(
            transactional_id=request.v3_and_below_transactional_id,
            producer_id=request.v3_and_below_producer_id,
            producer_epoch=request.v3_and_below_producer_epoch,
            partitions=[pb.TopicPartitionRef(topic=t.name, partition=p) for t in topics for p in t.partitions or ()],
        ),
    )
    code = kafka_error(for_version(code_of(answer), "AddPartitionsToTxn", ctx.api_version))
    topic_type = nested(ctx.response_type, "AddPartitionsToTxnTopicResult")
    partition_type = nested(ctx.response_type, "AddPartitionsToTxnPartitionResult")
    return build(
        ctx.response_type,
        results_by_topic_v3_and_below=tuple(
            build(
                topic_type,
                name=t.name,
                results_by_partition=tuple(
                    build(partition_type, partition_index=p, partition_error_code=code) for p in t.partitions or ()
                ),
            )
            for t in topics
        ),
    )


async def add_offsets_to_txn(request: Any, ctx: KafkaContext) -> Any:
    answer = await call(
        ctx,
        "AddOffsetsToTxn",
        pb.AddOffsetsToTxnRequest(
            transactional_id=request.transactional_id,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
            group_id=request.group_id,
        ),
    )
    return build(
        ctx.response_type, error_code=kafka_error(for_version(code_of(answer), "AddOffsetsToTxn", ctx.api_version))
    )


async def txn_offset_commit(request: Any, ctx: KafkaContext) -> Any:
    offsets = committed_offsets(request)
    answer = await call(
        ctx,
        "TxnOffsetCommit",
        pb.TxnOffsetCommitRequest(
            transactional_id=request.transactional_id,
            group_id=request.group_id,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
            member_id=getattr(request, "member_id", ""),
            generation=getattr(request, "generation_id", -1),
            offsets=offsets,
        ),
    )
    version = ctx.api_version
    topics = commit_answers(
        ctx.response_type,
        "TxnOffsetCommit",
        request.topics,
        answer,
        lambda c: for_version(c, "TxnOffsetCommit", version),
    )
    return build(ctx.response_type, topics=topics)


def transaction_version(end_txn_version: int) -> int:
    """Kafka's clientTransactionVersion of an EndTxn request: 2 from v5 (KIP-890 part 2), else 1."""
    return TV2 if end_txn_version >= 5 else TV1


async def end_txn(request: Any, ctx: KafkaContext) -> Any:
    answer = await call(
        ctx,
        "EndTxn",
        pb.EndTxnRequest(
            transactional_id=request.transactional_id,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
            commit=request.committed,
            transaction_version=transaction_version(ctx.api_version),
        ),
    )
    code = for_version(code_of(answer), "EndTxn", ctx.api_version)
    if code:
        return build(ctx.response_type, error_code=kafka_error(code), producer_id=-1, producer_epoch=-1)
    return build(
        ctx.response_type,
        error_code=kafka_error(0),
        producer_id=answer.producer_id,
        producer_epoch=answer.producer_epoch,
    )


APIS = [
    Api(24, "AddPartitionsToTxn", 0, 3, add_partitions_to_txn),
    Api(25, "AddOffsetsToTxn", 0, 4, add_offsets_to_txn),
    Api(28, "TxnOffsetCommit", 0, 5, txn_offset_commit),
    Api(26, "EndTxn", 0, 5, end_txn),
]
