"""Kafka's framing, pure: a request frame in, a kio request out; a kio response in, a frame out.

Rules:
- A frame is a 4-byte big-endian signed size, then that many bytes: the request header, then
  the body. The header's version follows the body's (kio's ``__header_schema__``: v2 for a
  flexible version, else v1); a response's header likewise (v1 flexible, v0 otherwise, and v0
  for every ApiVersions answer so that a client can read it whatever version it asked for).
- ``parse_request`` reads the fixed start (api key, api version, correlation id) first; a
  version the listener does not serve is returned without a body (``Request.body`` None) and
  answered UNSUPPORTED_VERSION where the answer can say it (``unsupported_answer``). A served version decodes with kio's
  ``entity_reader`` for (api key, version); a frame too short or that does not decode is
  ``MalformedFrame`` (the server closes that connection). Bytes left after the body are ignored,
  as Kafka's broker ignores them (librdkafka 2.16 sends three after its all-topics Metadata v12).
- ``build(cls, **values)`` makes a kio dataclass of any version from the union of every
  version's fields: a field the version lacks is dropped, one not given gets its zero value
  (0, "", (), False, a zero timedelta, error code NONE). Handlers use it to answer many versions
  with one function.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from kio.index import KioIndexError, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode as KafkaErrorCode
from kio.serial import entity_reader, entity_writer

API_VERSIONS_KEY = 18
FIXED_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
SIZE = struct.Struct(">i")
T = TypeVar("T")


class MalformedFrame(ValueError):
    """A frame that is not a request this listener can read; its connection is closed."""


@dataclass(frozen=True)
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None
    body: Any = None  # the kio request; None when the version is not served


def parse_request(frame: bytes, served: Callable[[int, int], bool]) -> Request:
    """The request in ``frame`` (without its size prefix); see the module rules."""
    if len(frame) < FIXED_HEADER.size:
        raise MalformedFrame(f"a frame of {len(frame)} bytes is shorter than a request header")
    api_key, api_version, correlation_id = FIXED_HEADER.unpack_from(frame)
    if not served(api_key, api_version):
        return Request(api_key, api_version, correlation_id)
    schema = load_request_schema(api_key, api_version)
    try:
        header, used = entity_reader(schema.__header_schema__)(frame, 0)
        body, _ = entity_reader(schema)(frame, used)
    except Exception as exc:  # kio raises several kinds for bad bytes; all mean the same here
        raise MalformedFrame(f"api {api_key} v{api_version} does not decode: {exc!r}") from None
    # Bytes after the body are ignored, as Kafka's broker does: librdkafka 2.16 sends 3 after its
    # all-topics Metadata v12 (and Kafka answers it).
    return Request(api_key, api_version, correlation_id, header.client_id, body)


def encode_response(correlation_id: int, body: Any) -> bytes:
    """The frame (size prefix included) answering ``correlation_id`` with the kio response ``body``."""
    header_type = type(body).__header_schema__
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    entity_writer(header_type)(buffer, header_type(correlation_id=correlation_id))
    entity_writer(type(body))(buffer, body)
    frame = buffer.getbuffer()
    SIZE.pack_into(frame, 0, len(frame) - SIZE.size)
    return bytes(frame)


def kafka_error(code: int) -> KafkaErrorCode:
    """kio's error code for a Ketch ``ErrorCode`` (the same numbers); UNKNOWN_SERVER_ERROR if kio lacks it."""
    try:
        return KafkaErrorCode(code)
    except ValueError:
        return KafkaErrorCode.unknown_server_error


def _zero(field: dataclasses.Field[Any]) -> Any:
    kind = field.metadata.get("kafka_type")
    if kind == "error_code":
        return KafkaErrorCode.none
    if kind in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(0)
    if kind in ("string",):
        return ""
    if kind in ("bytes", "records"):
        return b""
    if kind == "bool":
        return False
    if kind == "uuid":
        return uuid.UUID(int=0)
    if kind == "datetime_i64":
        return datetime.datetime.fromtimestamp(0, datetime.UTC)
    if kind == "float64":
        return 0.0
    if kind is not None:
        return 0
    return ()  # an array of entities (a nested entity is never required at top level in kio)


def build(cls: type[T], **values: Any) -> T:
    """A ``cls`` from ``values``: fields the version lacks dropped, the others' zero values filled."""
    kwargs = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in values:
            kwargs[field.name] = values[field.name]
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            kwargs[field.name] = _zero(field)
    return cls(**kwargs)


def schema_module(cls: type[Any]) -> ModuleType:
    """The kio module of ``cls``: its nested entities are attributes (``MetadataResponseTopic``)."""
    return sys.modules[cls.__module__]


def nested(cls: type[Any], name: str) -> type[Any]:
    """The entity ``name`` of the same API and version as ``cls``."""
    found: type[Any] = getattr(schema_module(cls), name)
    return found


def unsupported_answer(request: Request, api_versions: Callable[[], Any]) -> bytes | None:
    """UNSUPPORTED_VERSION for a request whose (key, version) is not served; None: close instead.

    ApiVersions of any version gets ApiVersions v0 with the error and the served list (Kafka's
    behaviour, so that a newer client downgrades). Another API at a version kio knows gets that
    version's response with its top-level error code set, when the response has one; when it has
    none (Metadata, Produce, ListOffsets...) there is no way to say it, and the connection is
    closed, as Kafka does for a version it does not support. An API key kio does not know gets
    the correlation id and the error code alone (header v0 and the first field of every error
    answer): a client cannot parse an answer to an API it has no schema for anyway."""
    code = kafka_error(35)  # UNSUPPORTED_VERSION
    if request.api_key == API_VERSIONS_KEY:
        return encode_response(request.correlation_id, api_versions())
    try:
        response_type = load_response_schema(request.api_key, request.api_version)
    except KioIndexError:
        return SIZE.pack(6) + struct.pack(">ih", request.correlation_id, code)
    if "error_code" not in {f.name for f in dataclasses.fields(response_type)}:
        return None
    return encode_response(request.correlation_id, build(response_type, error_code=code))


def by_topic(results: Iterable[T], topic: Callable[[T], str]) -> list[tuple[str, list[T]]]:
    """``results`` grouped by topic, topics and results in first-seen order (Kafka answers per topic)."""
    grouped: dict[str, list[T]] = {}
    for result in results:
        grouped.setdefault(topic(result), []).append(result)
    return list(grouped.items())


def millis(value: datetime.timedelta | int) -> int:
    """A kio ``timedelta`` field (max_wait, timeout) in whole milliseconds."""
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    return int(value)
