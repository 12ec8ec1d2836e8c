"""Helpers of the Kafka handlers' tests: a fake service for translation tests, a raw Kafka call.

``kafka_call(address, request)`` sends one kio request (any API, any version) over a new TCP
connection (tests/kafka_raw.py) to a real Kafka listener and returns the kio response: the versions and APIs a client
library does not send (FindCoordinator v4, LeaveGroup v3, IncrementalAlterConfigs) are tested
through it.

``FakeService`` records each (method, protobuf request) and answers with what the test put in
``answers[method]`` (a protobuf message, or a function of the request), else the default message
of the method's response type. ``encode`` serializes a kio response the way the listener does,
so a field of the wrong type for its version fails there.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_writer

from ketch.api.v1 import ketch_pb2 as pb
from node.kafka.context import Api, KafkaContext, ServiceCall
from tests.kafka_raw import RawConnection, make

__all__ = ["FakeService", "by_name", "context", "encode", "handle", "kafka_call", "make", "request_type"]

RESPONSE_TYPES = {"SaslAuthenticate": pb.SaslAuthenticateResponse}


@dataclass
class FakeService:
    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def __call__(self, method: str, request: Any) -> Any:
        self.calls.append((method, request))
        answer = self.answers.get(method)
        if callable(answer):
            return answer(request)
        if answer is not None:
            return answer
        return getattr(pb, f"{method}Response")()

    def requests(self, method: str) -> list[Any]:
        return [r for m, r in self.calls if m == method]


def context(api: Api, version: int, service: ServiceCall, state: dict[str, Any] | None = None) -> KafkaContext:
    return KafkaContext(
        api_version=version,
        client_id="test-client",
        principal="User:ANONYMOUS",
        response_type=load_response_schema(api.key, version),
        call=service,
        node_id=1,
        connection_state={} if state is None else state,
    )


def request_type(api: Api, version: int) -> type[Any]:
    found: type[Any] = load_request_schema(api.key, version)
    return found


def encode(response: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(response))(buffer, response)
    return buffer.getvalue()


async def handle(
    api: Api, version: int, service: FakeService, *, state: dict[str, Any] | None = None, **fields: Any
) -> Any:
    """Run ``api``'s handler on a request of ``version`` built from ``fields``; check it encodes."""
    request = request_type(api, version)(**fields)
    response = await api.handler(request, context(api, version, service, state))
    assert type(response) is load_response_schema(api.key, version)
    encode(response)
    return response


def by_name(apis: list[Api]) -> Callable[[str], Api]:
    table = {a.name: a for a in apis}
    return table.__getitem__


async def kafka_call(address: str, request: Any) -> Any:
    """The kio response of ``request`` from the Kafka listener at ``address`` (HOST:PORT), over
    tests/kafka_raw.py's connection, run in a thread so the test's event loop (aiokafka) goes on."""

    def blocking() -> Any:
        connection = RawConnection(address)
        try:
            return connection.call(request)
        finally:
            connection.close()

    return await asyncio.to_thread(blocking)
