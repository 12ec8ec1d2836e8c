"""The Admin's config calls (kafka-configs.sh): describe and incrementally alter topic and broker configs.

A mixin of ``Admin`` (admin.py), using its connection. Rules:
- A resource is a topic (``ConfigResource.topic(name)``) or the brokers:
  ``ConfigResource.broker()`` is the cluster-wide dynamic configs (every
  broker), ``ConfigResource.broker(n)`` broker ``n``'s own.
- ``describe_configs`` answers, per resource, every key with its value and
  where it comes from (``ConfigSource``, Kafka's). A broker resource with a
  node id goes to that broker (its own settings are in no other broker's
  image: Kafka's rule), everything else to any broker. The first failed
  resource raises its typed error, naming the resource.
- ``incremental_alter_configs({resource: {key: value}})`` sets each key; a
  value of None deletes it (the value falls back to the next source down).
  Everything goes in one request: the broker forwards it to the controller
  and answers once its own image holds the change, so a describe through
  the same client sees it. A refused resource changes nothing and never
  stops the others; the first refused one's typed error is raised after the
  rest were applied (like ``create_topics``). ``validate_only`` checks
  everything and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from ketch.aio.connection import Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import KetchError, error_for

__all__ = ["ConfigEntry", "ConfigResource", "ConfigResourceType", "ConfigSource", "ConfigsAdmin"]


class ConfigResourceType(IntEnum):
    TOPIC = 2
    BROKER = 4


class ConfigSource(IntEnum):
    """Where a value comes from, most specific first (Kafka's ConfigSource)."""

    DYNAMIC_TOPIC_CONFIG = 1  # the topic's own override
    DYNAMIC_BROKER_CONFIG = 2  # set at runtime for the broker that answered
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3  # set at runtime for every broker (`ketch cluster config --set`)
    STATIC_BROKER_CONFIG = 4  # the node's own setting (flag, environment, TOML)
    DEFAULT_CONFIG = 5  # Ketch's default


@dataclass(frozen=True)
class ConfigResource:
    type: ConfigResourceType
    name: str  # a topic name; for brokers a node id, or "" for the cluster-wide configs

    @classmethod
    def topic(cls, name: str) -> ConfigResource:
        return cls(ConfigResourceType.TOPIC, name)

    @classmethod
    def broker(cls, node_id: int | None = None) -> ConfigResource:
        """Broker ``node_id``'s configs, or (None) the cluster-wide ones."""
        return cls(ConfigResourceType.BROKER, "" if node_id is None else str(node_id))

    def __str__(self) -> str:
        if self.type == ConfigResourceType.TOPIC:
            return f"topic {self.name!r}"
        return f"broker {self.name}" if self.name else "the cluster-wide broker configs"


@dataclass(frozen=True)
class ConfigEntry:
    name: str
    value: str
    source: ConfigSource
    read_only: bool = False


def _pb(resource: ConfigResource) -> ketch_pb2.ConfigResource:
    return ketch_pb2.ConfigResource(type=int(resource.type), name=resource.name)  # type: ignore[arg-type]


def _error(code: int, resource: ConfigResource, message: str) -> KetchError:
    """The typed error, its message naming the resource."""
    return error_for(code, message if str(resource) in message else f"{resource}: {message}")


class ConfigsAdmin:
    _conn: Connection

    async def describe_configs(
        self, resources: Iterable[ConfigResource]
    ) -> dict[ConfigResource, dict[str, ConfigEntry]]:
        """``{resource: {key: ConfigEntry(name, value, source)}}`` for each resource, in the order given."""
        wanted = list(dict.fromkeys(resources))
        by_node: dict[int | None, list[ConfigResource]] = {}
        for r in wanted:
            node = int(r.name) if r.type == ConfigResourceType.BROKER and r.name.isdecimal() else None
            by_node.setdefault(node, []).append(r)
        if any(node is not None for node in by_node):
            await self._conn.refresh()  # the addresses of the brokers named

        async def ask(node: int | None, group: list[ConfigResource]) -> ketch_pb2.DescribeConfigsResponse:
            request = ketch_pb2.DescribeConfigsRequest(resources=[_pb(r) for r in group])
            if node is None:
                response = await self._conn.call_any("DescribeConfigs", request)
            else:
                response = await self._conn.call_node(node, "DescribeConfigs", request)
            assert isinstance(response, ketch_pb2.DescribeConfigsResponse)
            return response

        found: dict[ConfigResource, dict[str, ConfigEntry]] = {}
        for response in await asyncio.gather(*(ask(node, group) for node, group in by_node.items())):
            for result in response.results:
                resource = ConfigResource(ConfigResourceType(result.resource.type), result.resource.name)
                if result.error_code:
                    raise _error(result.error_code, resource, result.error_message)
                found[resource] = {
                    e.name: ConfigEntry(e.name, e.value, ConfigSource(e.source), e.read_only) for e in result.entries
                }
        return {r: found[r] for r in wanted}

    async def incremental_alter_configs(
        self, configs: Mapping[ConfigResource, Mapping[str, str | int | float | None]], validate_only: bool = False
    ) -> None:
        """Set (a value) or delete (None) config keys of each resource; raises the first refusal."""
        request = ketch_pb2.IncrementalAlterConfigsRequest(validate_only=validate_only)
        for resource, changes in configs.items():
            item = request.resources.add(resource=_pb(resource))
            for name, value in changes.items():
                if value is None:
                    item.configs.add(name=name, op=ketch_pb2.ALTER_CONFIG_DELETE)
                else:
                    item.configs.add(name=name, op=ketch_pb2.ALTER_CONFIG_SET, value=str(value))
        response = await self._conn.call_any("IncrementalAlterConfigs", request)
        assert isinstance(response, ketch_pb2.IncrementalAlterConfigsResponse)
        for result in response.results:
            if result.error_code:
                resource = ConfigResource(ConfigResourceType(result.resource.type), result.resource.name)
                raise _error(result.error_code, resource, result.error_message)
