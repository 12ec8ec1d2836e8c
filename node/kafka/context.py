"""The contract between the Kafka listener's connection loop and its API handlers.

Rules:
- A handler is ``async def handle(request, ctx) -> response``: ``request`` is the kio request
  dataclass of the version the client sent, the answer is the kio response dataclass of that same
  version (``ctx.response_type``). It translates: Kafka request -> ``ketch.v1`` protobuf request,
  ``await ctx.call("Method", pb_request)``, protobuf answer -> Kafka response. It holds no broker
  state of its own.
- ``ctx.call`` runs the listener's ``KetchService`` method (the code the gRPC service runs), after
  the same authorization rule (node/access.py ``RULES``) for the connection's principal; a refusal
  raises ``KetchError`` with the rule's typed code and the handler answers it as the API's error
  code (Kafka answers per topic, partition or group where the API has one).
- A module declares ``APIS``: one ``Api`` per API key it serves, with the lowest and highest
  version it implements and was tested with. ApiVersions advertises exactly these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class ServiceCall(Protocol):
    """Authorize then run one ``KetchService`` method for this connection's principal."""

    def __call__(self, method: str, request: Any) -> Awaitable[Any]: ...


@dataclass
class KafkaContext:
    """What a handler knows of one request: its version, its client and how to reach the broker."""

    api_version: int
    client_id: str | None
    principal: str
    response_type: type[Any]
    call: ServiceCall
    node_id: int
    connection_state: dict[str, Any] = field(default_factory=dict)  # what an API keeps per connection (SASL)


Handler = Callable[[Any, KafkaContext], Awaitable[Any]]


@dataclass(frozen=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler
