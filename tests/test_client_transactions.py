"""The transactional producer's state machine (ketch/transaction_manager.py), pure, and its producer settings.

Unit tests walk the states one call at a time; a Hypothesis state machine
drives random sequences of user calls and coordinator answers against an
independent table of which call is allowed in which state, and checks after
every step: a batch drains only inside IN_TRANSACTION/COMMITTING for a
partition added in this transaction, a fenced producer refuses every call
with PRODUCER_FENCED, and every EndTxn answer restarts all sequences at 0
under the epoch it named.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ketch.aio.accumulator import Accumulator
from ketch.aio.connection import Broker, Cluster, PartitionInfo, TopicInfo
from ketch.aio.producer import Producer
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import ErrorCode, KetchError
from ketch.group_rules import ConsumerGroupMetadata
from ketch.idempotence import NO_SEQUENCE, IdempotentProducerState
from ketch.recordbatch import parse_header, split_batches
from ketch.records import TopicPartition
from ketch.transaction_manager import State, TransactionManager
from tests.test_client_errors import FakeBroker

TPS = (("t", 0), ("t", 1), ("u", 0))


@dataclass(eq=False)
class Batch:
    tp: tuple[str, int]
    count: int = 1
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = NO_SEQUENCE

    @property
    def record_count(self) -> int:
        return self.count


def manager() -> TransactionManager:
    return TransactionManager("tx-1", IdempotentProducerState())


def ready(pid: int = 7, epoch: int = 0) -> TransactionManager:
    m = manager()
    m.begin_init()
    m.init_completed(pid, epoch)
    return m


def refused(fn: object, code: ErrorCode = ErrorCode.INVALID_TXN_STATE, says: str = "") -> KetchError:
    with pytest.raises(KetchError) as info:
        fn()  # type: ignore[operator]
    assert info.value.code == code, info.value
    assert says in str(info.value)
    return info.value


def test_a_transaction_from_init_to_commit_bumps_the_epoch_and_restarts_sequences() -> None:
    m = ready(7, 0)
    assert m.state is State.READY
    m.begin_transaction()
    m.check_send()
    assert not m.may_drain(TPS[0])  # not added yet: pending
    assert m.partitions_to_add() == [TPS[0]]
    assert m.partitions_to_add() == []  # one AddPartitionsToTxn at a time
    assert not m.may_drain(TPS[0])
    m.add_partitions_completed([TPS[0]])
    assert m.may_drain(TPS[0])
    b = Batch(TPS[0], 3)
    assert m.idempotence.drain(b, 0)
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (7, 0, 0)
    m.idempotence.acked(b, 0)
    m.begin_commit()
    assert m.may_drain(TPS[0])  # the commit flushes
    m.end_completed(7, 1)
    assert (m.state, m.producer_id, m.epoch) == (State.READY, 7, 1)
    assert m.partitions == set() and not m.transaction_started
    m.begin_transaction()
    m.partitions_to_add()
    assert not m.may_drain(TPS[0])  # every transaction adds its partitions again
    m.add_partitions_completed([TPS[0]])
    b2 = Batch(TPS[0], 2)
    assert m.idempotence.drain(b2, 0)
    assert (b2.producer_id, b2.producer_epoch, b2.base_sequence) == (7, 1, 0)


def test_calls_out_of_order_say_what_to_call() -> None:
    m = manager()
    refused(m.begin_transaction, says="call init_transactions() first")
    refused(m.check_send, says="init_transactions")
    m.begin_init()
    m.begin_init()  # a timed-out init may be retried
    refused(m.begin_transaction, says="call it again")
    m.init_completed(1, 0)
    refused(m.begin_init, says="Ready")
    refused(m.check_send, says="call begin_transaction() first")
    refused(m.begin_commit, says="begin_transaction()")
    refused(m.begin_abort, says="begin_transaction()")
    m.begin_transaction()
    refused(m.begin_transaction, says="commit_transaction() or abort_transaction()")
    m.begin_commit()
    m.begin_commit()  # a commit that timed out is retried with the same epoch
    refused(m.check_send, says="call commit_transaction() again")
    refused(m.begin_abort, says="commit")


def test_a_transaction_that_added_nothing_ends_without_end_txn_and_keeps_the_epoch() -> None:
    m = ready(3, 4)
    m.begin_transaction()
    assert not m.transaction_started
    m.begin_commit()
    m.end_completed()
    assert (m.state, m.producer_id, m.epoch) == (State.READY, 3, 4)


def test_a_failed_send_makes_the_transaction_abortable_commit_raises_abort_works() -> None:
    m = ready()
    m.begin_transaction()
    m.may_drain(TPS[0])
    m.add_partitions_completed(m.partitions_to_add())
    m.send_failed(KetchError("refused", code=ErrorCode.INVALID_PRODUCER_EPOCH))
    assert m.state is State.ABORTABLE_ERROR
    assert not m.may_drain(TPS[0])
    assert m.dropped_batch_error() is not None
    refused(m.begin_commit, ErrorCode.INVALID_PRODUCER_EPOCH, "call abort_transaction()")
    refused(m.check_send, ErrorCode.INVALID_PRODUCER_EPOCH, "call abort_transaction()")
    m.begin_abort()
    assert m.dropped_batch_error() is not None  # queued batches are dropped while aborting
    m.end_completed(7, 1)
    assert m.state is State.READY and m.epoch == 1


def test_fenced_is_fatal_and_every_later_call_says_producer_fenced() -> None:
    for code in (ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.INVALID_PRODUCER_ID_MAPPING):
        m = ready()
        m.begin_transaction()
        m.coordinator_error(KetchError("old epoch", code=code))
        assert m.is_fenced
        for call in (m.begin_transaction, m.begin_commit, m.begin_abort, m.begin_init, m.check_send):
            refused(call, ErrorCode.PRODUCER_FENCED, "fenced")
        assert not m.may_drain(TPS[0])


def test_producer_fenced_on_a_send_is_fatal_too() -> None:
    m = ready()
    m.begin_transaction()
    m.send_failed(KetchError("zombie", code=ErrorCode.PRODUCER_FENCED))
    refused(m.begin_abort, ErrorCode.PRODUCER_FENCED)


def test_an_invalid_txn_state_commit_answer_is_abortable_not_fatal() -> None:
    m = ready()
    m.begin_transaction()
    m.begin_commit()
    m.coordinator_error(KetchError("the transaction timed out and was aborted", code=ErrorCode.INVALID_TXN_STATE))
    assert m.state is State.ABORTABLE_ERROR
    m.begin_abort()


def test_a_retriable_add_puts_partitions_back_to_pending() -> None:
    m = ready()
    m.begin_transaction()
    m.may_drain(TPS[0])
    m.may_drain(TPS[1])
    adding = m.partitions_to_add()
    assert set(adding) == {TPS[0], TPS[1]}  # one call for all pending partitions
    m.add_partitions_retry(adding)
    assert set(m.partitions_to_add()) == {TPS[0], TPS[1]}
    assert m.transaction_started  # the coordinator may hold them: an abort must send EndTxn


def test_a_transactional_id_implies_idempotence_and_acks_all() -> None:
    with pytest.raises(ValueError, match="acks='all'"):
        Producer(transactional_id="x", acks=1)
    with pytest.raises(ValueError, match="idempotence"):
        Producer(transactional_id="x", enable_idempotence=False)
    p = Producer(transactional_id="x")
    assert p.enable_idempotence and p.acks == -1


def test_sending_outside_a_transaction_is_refused_before_any_network() -> None:
    p = Producer("127.0.0.1:1", transactional_id="x")
    with pytest.raises(KetchError) as info:
        asyncio.run(p.send("t", b"v"))
    assert info.value.code == ErrorCode.INVALID_TXN_STATE and "init_transactions" in str(info.value)
    with pytest.raises(KetchError, match="begin_transaction"):
        p.begin_transaction()
    plain = Producer("127.0.0.1:1")
    with pytest.raises(KetchError, match="transactional_id"):
        plain.begin_transaction()


def test_transactional_batches_carry_attribute_bit_4() -> None:
    m = ready(9, 2)
    m.begin_transaction()
    acc = Accumulator(idempotence=m.idempotence, transactions=m, linger_ms=0, clock=lambda: 0.0)
    tps = [TopicPartition("t", 0)]
    info = TopicInfo.make("t", 0, "", "id", {0: PartitionInfo(0, 1, 0)})
    acc.append(info, 0, None, b"v", [], None, _Sink())
    cluster = Cluster("c", 1, {1: Broker(1, "h", 1)}, {"t": info}, 1.0)
    out, _, _ = acc.drain(cluster, lambda n: True, 1 << 20, 1.0)
    assert out == {}  # not added yet
    assert m.partitions_to_add() == [tps[0]]
    m.add_partitions_completed(tps)
    out, _, _ = acc.drain(cluster, lambda n: True, 1 << 20, 1.0)
    [batch] = out[1]
    header = parse_header(batch.close())
    assert header.attributes & 0x10 and not header.attributes & 0x20
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (9, 2, 0)


class _Sink:
    def set_result(self, value: object) -> None: ...

    def set_exception(self, exc: BaseException) -> None: ...


# -- random call sequences ---------------------------------------------------------------

# The table, written from Kafka's TransactionManager, independently of the module's code.
ALLOWED = {
    "init": {State.UNINITIALIZED, State.INITIALIZING},
    "begin": {State.READY},
    "send": {State.IN_TRANSACTION},
    "commit": {State.IN_TRANSACTION, State.COMMITTING},
    "abort": {State.IN_TRANSACTION, State.ABORTABLE_ERROR, State.ABORTING},
    "offsets": {State.IN_TRANSACTION},
}
AFTER = {
    "init": State.INITIALIZING,
    "begin": State.IN_TRANSACTION,
    "commit": State.COMMITTING,
    "abort": State.ABORTING,
}


class TransactionCalls(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = manager()
        self.next_epoch = 0
        self.fatal: ErrorCode | None = None  # the code every call raises once the producer is dead
        self.in_flight: list[Batch] = []
        self.next_sequence: dict[tuple[tuple[str, int], int, int], int] = {}

    def _call(self, name: str, fn: object) -> bool:
        before = self.m.state
        try:
            fn()  # type: ignore[operator]
        except KetchError as e:
            assert before not in ALLOWED[name], (name, before, e)
            if self.fatal is not None:
                assert e.code == self.fatal
            elif before is not State.ABORTABLE_ERROR:
                assert e.code == ErrorCode.INVALID_TXN_STATE
            assert self.m.state is before  # a refused call changes nothing
            return False
        assert before in ALLOWED[name], (name, before)
        if name in AFTER:
            assert self.m.state is AFTER[name]
        return True

    @rule()
    def init(self) -> None:
        self._call("init", self.m.begin_init)

    @precondition(lambda self: self.m.state is State.INITIALIZING)
    @rule(pid=st.integers(0, 3))
    def init_answered(self, pid: int) -> None:
        self.m.init_completed(pid, 0)
        self.next_epoch = 1

    @rule()
    def begin(self) -> None:
        self._call("begin", self.m.begin_transaction)

    @rule()
    def send_check(self) -> None:
        self._call("send", self.m.check_send)

    @rule()
    def offsets(self) -> None:
        if self._call("offsets", lambda: self.m.begin_add_offsets("g")):
            self.m.add_offsets_completed("g")

    @rule(tp=st.sampled_from(TPS))
    def drain(self, tp: tuple[str, int]) -> None:
        b = Batch(tp, 2)
        if self.m.may_drain(tp) and self.m.idempotence.drain(b, 0):
            # every (producer id, epoch) of a partition numbers its batches from 0: the epoch is the
            # transaction's, never one the client bumped on its own
            assert (b.producer_id, b.producer_epoch) == (self.m.producer_id, self.m.epoch)
            key = (tp, b.producer_id, b.producer_epoch)
            assert b.base_sequence == self.next_sequence.get(key, 0)
            self.next_sequence[key] = b.base_sequence + b.count
            self.in_flight.append(b)

    @rule(ok=st.booleans())
    def add_answered(self, ok: bool) -> None:
        tps = self.m.partitions_to_add()
        if ok:
            self.m.add_partitions_completed(tps)
        else:
            self.m.add_partitions_retry(tps)

    @rule(ok=st.booleans())
    def batch_answered(self, ok: bool) -> None:
        if not self.in_flight:
            return
        b = self.in_flight.pop(0)
        if ok:
            self.m.idempotence.acked(b, 0)
        else:
            self.m.send_failed(KetchError("refused", code=ErrorCode.NOT_ENOUGH_REPLICAS))
            self.m.idempotence.failed(b)

    @rule()
    def commit(self) -> None:
        self._call("commit", self.m.begin_commit)

    @rule()
    def abort(self) -> None:
        self._call("abort", self.m.begin_abort)

    @precondition(lambda self: self.m.state in (State.COMMITTING, State.ABORTING))
    @rule()
    def end_answered(self) -> None:
        for b in self.in_flight:  # the producer waits for every batch before EndTxn
            self.m.idempotence.acked(b, 0)
        self.in_flight.clear()
        if not self.m.transaction_started:
            self.m.end_completed()
            return
        self.m.end_completed(self.m.producer_id, self.next_epoch)
        assert self.m.epoch == self.next_epoch  # the next transaction uses the epoch EndTxn named
        self.next_epoch += 1

    @rule(code=st.sampled_from([ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_TXN_STATE]))
    def coordinator_error(self, code: ErrorCode) -> None:
        initializing = self.m.state is State.INITIALIZING
        self.m.coordinator_error(KetchError("answer", code=code))
        if self.fatal is None and (code == ErrorCode.PRODUCER_FENCED or initializing):
            self.fatal = code  # InitProducerId's non-retriable answers are fatal too

    @invariant()
    def drains_only_inside_a_transaction(self) -> None:
        for tp in TPS:
            if tp in self.m.partitions and self.m.state in (State.IN_TRANSACTION, State.COMMITTING):
                continue
            pending = set(self.m.pending)
            assert not self.m.may_drain(tp)
            self.m.pending = pending  # the probe must not change what the sender will add

    @invariant()
    def fatal_is_forever(self) -> None:
        assert self.m.is_fenced == (self.fatal is not None)


TransactionCalls.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)
test_transaction_calls = TransactionCalls.TestCase


# -- the producer's driver against a fake coordinator and leader (gRPC in-process) ----------------------


class FakeTransactionBroker(FakeBroker):
    """One broker that is leader of every partition and the transaction and group coordinator.

    Its coordinator keeps one producer id and a current epoch: InitProducerId bumps
    the epoch (fencing the older session), EndTxn answers the next epoch, and any call
    with an older epoch is PRODUCER_FENCED. ``txn_script`` holds error codes answered,
    in order, to the next coordinator calls (to check retries)."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = -1
        self.txn_script: list[int] = []
        self.calls: list[tuple[str, Any]] = []
        self.added: set[tuple[str, int]] = set()
        self.key_types: list[int] = []
        self.produce_tids: list[str] = []
        self.attributes: list[int] = []

    def _scripted(self) -> int:
        return self.txn_script.pop(0) if self.txn_script else 0

    async def FindCoordinator(self, request: pb.FindCoordinatorRequest, context: Any) -> pb.FindCoordinatorResponse:
        self.key_types.append(request.key_type)
        return pb.FindCoordinatorResponse(node_id=1, host="127.0.0.1", port=self.port)

    async def InitProducerId(self, request: pb.InitProducerIdRequest, context: Any) -> pb.InitProducerIdResponse:
        self.calls.append(("InitProducerId", (request.transactional_id, request.transaction_timeout_ms)))
        code = self._scripted()
        if code:
            return pb.InitProducerIdResponse(error_code=code)  # type: ignore[arg-type]
        self.epoch += 1
        self.added.clear()
        return pb.InitProducerIdResponse(producer_id=5000, producer_epoch=self.epoch)

    def _fenced(self, epoch: int) -> int:
        return self._scripted() or (ErrorCode.PRODUCER_FENCED if epoch != self.epoch else 0)

    async def AddPartitionsToTxn(self, request: pb.AddPartitionsToTxnRequest, context: Any) -> Any:
        parts = sorted((p.topic, p.partition) for p in request.partitions)
        self.calls.append(("AddPartitionsToTxn", (request.producer_epoch, parts)))
        code = self._fenced(request.producer_epoch)
        if not code:
            self.added.update(parts)
        return pb.AddPartitionsToTxnResponse(error_code=code)  # type: ignore[arg-type]

    async def AddOffsetsToTxn(self, request: pb.AddOffsetsToTxnRequest, context: Any) -> Any:
        self.calls.append(("AddOffsetsToTxn", (request.producer_epoch, request.group_id)))
        return pb.AddOffsetsToTxnResponse(error_code=self._fenced(request.producer_epoch))  # type: ignore[arg-type]

    async def TxnOffsetCommit(self, request: pb.TxnOffsetCommitRequest, context: Any) -> Any:
        offsets = sorted((o.topic, o.partition, o.offset) for o in request.offsets)
        self.calls.append(("TxnOffsetCommit", (request.member_id, request.generation, offsets)))
        return pb.TxnOffsetCommitResponse()

    async def EndTxn(self, request: pb.EndTxnRequest, context: Any) -> pb.EndTxnResponse:
        self.calls.append(("EndTxn", (request.producer_epoch, request.commit)))
        code = self._fenced(request.producer_epoch)
        if code:
            return pb.EndTxnResponse(error_code=code)  # type: ignore[arg-type]
        self.epoch += 1
        self.added.clear()
        return pb.EndTxnResponse(producer_id=5000, producer_epoch=self.epoch)

    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        self.produce_tids.append(request.transactional_id)
        for item in request.partitions:
            assert (item.topic, item.partition) in self.added, "a batch before AddPartitionsToTxn"
            self.attributes += [h.attributes for h, _ in split_batches(item.records)]
        return await super().Produce(request, context)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def run_txn(test: Callable[[FakeTransactionBroker], Awaitable[None]]) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        fake = FakeTransactionBroker()
        ketch_pb2_grpc.add_KetchServicer_to_server(fake, server)
        fake.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            await asyncio.wait_for(test(fake), 20)
        finally:
            await server.stop(None)

    asyncio.run(main())


def txn_producer(fake: FakeTransactionBroker, **kw: Any) -> Producer:
    kw.setdefault("retry_backoff_ms", 10)
    return Producer(f"127.0.0.1:{fake.port}", transactional_id="tx", linger_ms=50, **kw)


def test_the_producer_adds_partitions_sends_transactional_batches_and_moves_to_the_next_epoch() -> None:
    async def body(fake: FakeTransactionBroker) -> None:
        fake.txn_script = [ErrorCode.CONCURRENT_TRANSACTIONS]  # the first InitProducerId: retried
        async with txn_producer(fake, transaction_timeout_ms=9000) as p:
            await p.init_transactions()
            assert fake.calls[:2] == [("InitProducerId", ("tx", 9000))] * 2
            assert set(fake.key_types) == {1}  # FindCoordinator for a transaction coordinator
            p.begin_transaction()
            futures = [await p.send("t", b"v", partition=i % 2) for i in range(5)]
            await p.commit_transaction()
            assert all(f.done() and not f.exception() for f in futures)
            adds = [args for name, args in fake.calls if name == "AddPartitionsToTxn"]
            assert adds == [(0, [("t", 0), ("t", 1)])]  # one call for both new partitions, before their batches
            assert fake.calls[-1] == ("EndTxn", (0, True))
            assert set(fake.produce_tids) == {"tx"} and all(a & 0x10 for a in fake.attributes)
            assert sorted(fake.stamps) == [(0, 5000, 0, 0), (1, 5000, 0, 0)]
            fake.stamps.clear()
            p.begin_transaction()
            await (await p.send("t", b"w", partition=0))
            await p.abort_transaction()
            assert fake.stamps == [(0, 5000, 1, 0)]  # the epoch EndTxn named; sequences restart at 0
            assert [args for name, args in fake.calls if name == "AddPartitionsToTxn"][-1] == (1, [("t", 0)])
            assert fake.calls[-1] == ("EndTxn", (1, False))
            p.begin_transaction()
            await p.commit_transaction()  # nothing added: no EndTxn, the epoch stays
            assert fake.calls[-1] == ("EndTxn", (1, False))

    run_txn(body)


def test_commit_retries_end_txn_with_the_same_epoch() -> None:
    async def body(fake: FakeTransactionBroker) -> None:
        async with txn_producer(fake) as p:
            await p.init_transactions()
            p.begin_transaction()
            await (await p.send("t", b"v", partition=0))
            fake.txn_script = [ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.CONCURRENT_TRANSACTIONS]
            await p.commit_transaction()
            assert [args for name, args in fake.calls if name == "EndTxn"] == [(0, True)] * 3

    run_txn(body)


def test_send_offsets_adds_the_group_then_commits_offsets_with_the_member() -> None:
    async def body(fake: FakeTransactionBroker) -> None:
        async with txn_producer(fake) as p:
            await p.init_transactions()
            p.begin_transaction()
            meta = ConsumerGroupMetadata("g", 7, "member-1")
            await p.send_offsets_to_transaction({TopicPartition("t", 1): 42}, meta)
            await p.commit_transaction()
            assert fake.names()[-3:] == ["AddOffsetsToTxn", "TxnOffsetCommit", "EndTxn"]
            assert fake.calls[-3][1] == (0, "g")
            assert fake.calls[-2][1] == ("member-1", 7, [("t", 1, 42)])

    run_txn(body)


def test_a_failed_send_makes_commit_raise_and_abort_recover() -> None:
    async def body(fake: FakeTransactionBroker) -> None:
        async with txn_producer(fake) as p:
            await p.init_transactions()
            p.begin_transaction()
            fake.script = [ErrorCode.INVALID_PRODUCER_EPOCH]
            fut = await p.send("t", b"v", partition=0)
            with pytest.raises(KetchError) as info:
                await p.commit_transaction()
            assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH and "abort_transaction" in str(info.value)
            assert fut.exception() is not None
            await p.abort_transaction()
            assert fake.calls[-1] == ("EndTxn", (0, False))
            p.begin_transaction()
            await (await p.send("t", b"again", partition=0))
            await p.commit_transaction()

    run_txn(body)


def test_a_fenced_producer_raises_producer_fenced_from_every_later_call() -> None:
    async def body(fake: FakeTransactionBroker) -> None:
        async with txn_producer(fake) as zombie:
            await zombie.init_transactions()
            zombie.begin_transaction()
            await (await zombie.send("t", b"v", partition=0))
            async with txn_producer(fake) as successor:
                await successor.init_transactions()  # bumps the coordinator's epoch
            with pytest.raises(KetchError) as info:
                await zombie.commit_transaction()
            assert info.value.code == ErrorCode.PRODUCER_FENCED
            for call in (zombie.begin_transaction, zombie.commit_transaction, zombie.abort_transaction):
                with pytest.raises(KetchError) as again:
                    result = call()
                    if asyncio.iscoroutine(result):
                        await result
                assert again.value.code == ErrorCode.PRODUCER_FENCED
            with pytest.raises(KetchError) as refused:
                await zombie.send("t", b"late", partition=1)
            assert refused.value.code == ErrorCode.PRODUCER_FENCED

    run_txn(body)


def test_an_abort_the_coordinator_has_nothing_open_for_ends_locally_at_the_same_epoch() -> None:
    async def body(fake: FakeTransactionBroker) -> None:
        async with txn_producer(fake) as p:
            await p.init_transactions()
            p.begin_transaction()
            assert p._txn is not None
            p._txn.manager.begin_add_offsets("g")  # an AddOffsetsToTxn went out; its answer was lost
            fake.txn_script = [ErrorCode.INVALID_TXN_STATE]  # the coordinator never saw the Add
            await p.abort_transaction()
            assert fake.calls[-1] == ("EndTxn", (0, False))
            p.begin_transaction()
            await (await p.send("t", b"v", partition=0))
            await p.commit_transaction()
            assert fake.calls[-1] == ("EndTxn", (0, True))  # still epoch 0: nothing bumped it

    run_txn(body)
