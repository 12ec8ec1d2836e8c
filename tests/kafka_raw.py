"""A raw Kafka protocol client for tests: kio frames over a blocking socket, no client library.

For what a real client would never send (unsupported versions, oversized or broken frames,
pipelined requests read back one by one) and to read answers field by field.
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

SIZE = struct.Struct(">i")


def request_frame(body: Any, correlation_id: int = 1, client_id: str = "raw-test") -> bytes:
    """The frame (size included) of the kio request ``body``."""
    header_type = type(body).__header_schema__
    header = header_type(
        request_api_key=body.__api_key__,
        request_api_version=body.__version__,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    buffer = io.BytesIO()
    entity_writer(header_type)(buffer, header)
    entity_writer(type(body))(buffer, body)
    return SIZE.pack(len(buffer.getvalue())) + buffer.getvalue()


def raw_frame(api_key: int, api_version: int, correlation_id: int, rest: bytes = b"") -> bytes:
    """A frame of the fixed header start and ``rest`` (for versions kio has no schema of)."""
    payload = struct.pack(">hhi", api_key, api_version, correlation_id) + rest
    return SIZE.pack(len(payload)) + payload


class RawConnection:
    def __init__(self, address: str, timeout_s: float = 10.0, source_host: str | None = None) -> None:
        host, port = address.rsplit(":", 1)
        source = (source_host, 0) if source_host else None  # e.g. 127.0.0.3: a client address of its own
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s, source_address=source)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, count: int) -> bytes:
        chunks = []
        while count:
            chunk = self.sock.recv(count)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def read_frame(self) -> bytes:
        (size,) = SIZE.unpack(self._read_exactly(4))
        return self._read_exactly(size)

    def read_response(self, api_key: int, api_version: int) -> tuple[int, Any]:
        """(correlation id, kio response) of the next frame, read as (api_key, api_version)."""
        frame = self.read_frame()
        response_type = load_response_schema(api_key, api_version)
        header, used = entity_reader(response_type.__header_schema__)(frame, 0)
        body, size = entity_reader(response_type)(frame, used)
        assert used + size == len(frame), "bytes left after the response"
        return header.correlation_id, body

    def call(self, body: Any, correlation_id: int = 1) -> Any:
        self.send(request_frame(body, correlation_id))
        got, response = self.read_response(body.__api_key__, body.__version__)
        assert got == correlation_id
        return response

    def closed_by_server(self, timeout_s: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout_s`` (reading and dropping any answer)."""
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    def close(self) -> None:
        self.sock.close()


def request_type(api_key: int, api_version: int) -> type[Any]:
    return load_request_schema(api_key, api_version)


def make(cls: Any, **fields: Any) -> Any:
    """A kio entity from plain values (kio's phantom types are for its own checks, not ours)."""
    return cls(**fields)
