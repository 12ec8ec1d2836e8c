"""LeaderFetches: a follower's fetches to one leader, over one FetchStream call.

Every replication round is one Fetch request and its answer (node/replica_fetcher.py). Sending
them as messages of one long-lived FetchStream call instead of one unary call each costs the
leader less than half the gRPC CPU per round (``python -m bench rpc-cost``: ~130 us against
~350 us of server CPU per exchange on the 2-core machine), and the leader answers each message
exactly as it answers Fetch (node/fetch_service.py). Rules:

1. One exchange at a time: ``exchange`` writes a request and reads its answer; the follower
   sends its next request only after it applied the last answer (that is its acknowledgement).
2. The call is opened on first use and again after it ended: an error, a timeout or a cut
   short (``cut_short``) cancels it, and a leader that ended it (its shutdown) is a
   ``ConnectionResetError``; the next exchange opens a new call. The caller starts a new
   fetch session after any of these, as after a failed unary fetch. A call that broke while
   idle between exchanges (the leader was killed: gRPC fails the write with INTERNAL) is
   replaced at once by a new one, whose error is the one raised (UNAVAILABLE for a dead
   leader, which the caller reports to the controller).
3. Each exchange has a deadline (the caller's: the fetch's wait plus a margin); past it the
   call is cancelled and ``TimeoutError`` raised, so a leader that stopped answering (paused,
   cut off) never holds the follower, as the unary call's deadline did.
4. A leader without FetchStream (an older Ketch during a rolling upgrade: UNIMPLEMENTED) is
   fetched from with unary Fetch calls from then on, until one of them finds it unreachable
   (UNAVAILABLE: it is restarting, perhaps as the next version); the exchange after that tries
   FetchStream again. So a follower that outlives its leader's upgrade streams again.
5. ``cut_short`` (the followed set changed: node/replica_fetcher.py ``reconcile``) cancels the
   exchange in flight from outside; its ``exchange`` raises ``CancelledError`` with
   ``was_cut_short`` true, which the caller tells apart from its own task's cancellation.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc

log = logging.getLogger("ketch.node.fetcher")


class LeaderFetches:
    def __init__(self, stub: ketch_pb2_grpc.KetchStub, leader_id: int) -> None:
        self._stub = stub
        self._leader_id = leader_id
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._unary_call: grpc.aio.UnaryUnaryCall | None = None
        self.unary = False  # the leader has no FetchStream (rule 4)
        self.was_cut_short = False

    async def exchange(self, request: pb.FetchRequest, timeout_s: float) -> pb.FetchResponse:
        """The leader's answer to ``request`` (rules 1-4)."""
        self.was_cut_short = False
        if self.unary:
            self._unary_call = call = self._stub.Fetch(request, timeout=timeout_s)
            try:
                return await call
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    self.unary = False  # rule 4: the leader that comes back may have FetchStream
                raise
            finally:
                self._unary_call = None
        stream = self._stream
        reused = stream is not None and not stream.done()
        if stream is None or not reused:
            stream = self._stream = self._stub.FetchStream()
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    await stream.write(request)
                except grpc.aio.AioRpcError:
                    if not reused:
                        raise
                    # it broke while idle (gRPC says INTERNAL on the write): once more on a new call,
                    # whose error says what is wrong now (UNAVAILABLE: the leader is down)
                    stream.cancel()
                    stream = self._stream = self._stub.FetchStream()
                    await stream.write(request)
                response = await stream.read()
        except grpc.aio.AioRpcError as exc:
            self.close()
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            log.info("leader %d has no FetchStream (an older version): fetching with unary calls", self._leader_id)
            self.unary = True
            return await self.exchange(request, timeout_s)
        except BaseException:
            self.close()
            raise
        if response is grpc.aio.EOF:  # the leader ended the call (its shutdown)
            self.close()
            raise ConnectionResetError(f"leader {self._leader_id} ended the fetch stream")
        assert isinstance(response, pb.FetchResponse)
        return response

    def cut_short(self) -> None:
        """Cancel the exchange in flight, if any (rule 5)."""
        call = self._unary_call or self._stream
        if call is not None and not call.done():
            self.was_cut_short = True
            call.cancel()

    def close(self) -> None:
        """End the call (the next exchange opens a new one)."""
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
