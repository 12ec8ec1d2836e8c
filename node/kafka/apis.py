"""The registry of the Kafka listener: every module's ``APIS``, and ApiVersions answered from it.

Rules:
- ``MODULES`` names the handler modules (node/kafka/<name>.py), one line each; every one must
  import (a missing module is an error at start, never a silently smaller ApiVersions). Two
  modules serving the same API key is an error at import.
- ``REGISTRY.served(key, version)`` is what the server dispatches on; ApiVersions (v0-3)
  advertises exactly the registered ranges, ApiVersions included, and nothing else (no
  features). A client asking ApiVersions at a version above 3 gets the v0 answer with
  UNSUPPORTED_VERSION and the list (node/kafka/wire.py), as Kafka does.
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Iterable
from typing import Any

from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.static.primitive import i16

from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, kafka_error, nested

MODULES = (
    "metadata",
    "produce",
    "fetch",
    "offsets",
    "producer_ids",
    "groups",
    "admin",
    "txn",
    "sasl",
)
API_VERSIONS_KEY = 18
UNSUPPORTED_VERSION = 35


class Registry:
    """The APIs served, by key."""

    def __init__(self, apis: Iterable[Api] = ()) -> None:
        self.by_key: dict[int, Api] = {}
        for api in apis:
            self.add(api)

    def add(self, api: Api) -> None:
        if api.key in self.by_key:
            raise ValueError(f"API key {api.key} ({api.name}) is registered twice")
        self.by_key[api.key] = api

    def served(self, key: int, version: int) -> bool:
        api = self.by_key.get(key)
        return api is not None and api.min_version <= version <= api.max_version

    def handler(self, key: int) -> Api:
        return self.by_key[key]

    def api_versions(self, response_type: type[Any], error: int = 0) -> Any:
        version_type = nested(response_type, "ApiVersion")
        keys = tuple(
            version_type(api_key=i16(a.key), min_version=i16(a.min_version), max_version=i16(a.max_version))
            for a in sorted(self.by_key.values(), key=lambda a: a.key)
        )
        return build(response_type, error_code=kafka_error(error), api_keys=keys, throttle_time=datetime.timedelta(0))

    def unsupported_api_versions(self) -> Any:
        """ApiVersions v0 with UNSUPPORTED_VERSION and the served list (for a too new ApiVersions)."""
        return self.api_versions(ApiVersionsResponseV0, UNSUPPORTED_VERSION)


def _modules() -> list[Any]:
    return [importlib.import_module(f"node.kafka.{name}") for name in MODULES]


def _registry() -> Registry:
    registry = Registry(api for module in _modules() for api in module.APIS)

    async def api_versions(request: Any, ctx: KafkaContext) -> Any:
        return registry.api_versions(ctx.response_type)

    registry.add(Api(API_VERSIONS_KEY, "ApiVersions", 0, 3, api_versions))
    return registry


REGISTRY = _registry()
