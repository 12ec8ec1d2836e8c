"""The Kafka listener's framing (node/kafka/wire.py, node/kafka/server.py).

Pure: every served (api, version) decodes what kio encodes; truncated and random frames are
``MalformedFrame`` and nothing else, bytes after a body are ignored (as Kafka does);
unsupported versions are answered as the module rules say; response headers follow the body's
version (v0 for ApiVersions). Then a fuzz loop of random, truncated and mutated frames against
a real node's Kafka listener: each connection is closed (or answered), and the node still
answers ApiVersions and Metadata afterwards.
"""

from __future__ import annotations

import contextlib
import random
import struct
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.metadata.v12.request import MetadataRequest
from kio.serial import entity_reader
from kio.static.primitive import Records

from ketch import Admin, NewTopic
from node.kafka.apis import REGISTRY, Registry
from node.kafka.context import Api
from node.kafka.wire import MalformedFrame, Request, encode_response, parse_request, unsupported_answer
from node.process import NodeProcess, free_ports
from tests.harness import wait_broker_alive
from tests.kafka_raw import RawConnection, make, raw_frame, request_frame

IDLE_MS = 800
PER_IP = 16  # the node's own calls from 127.0.0.1 count too: far below it
st.register_type_strategy(Records, st.binary(max_size=64).map(Records))
SERVED = sorted(
    (api.key, version) for api in REGISTRY.by_key.values() for version in range(api.min_version, api.max_version + 1)
)


@st.composite
def served_requests(draw: st.DrawFn) -> Any:
    """A request of a served version that kio itself can read back: kio's reader refuses some
    durations its writer writes (an i64 of milliseconds past Python's timedelta, 'timedelta
    milliseconds overflow'); a client sending one gets its connection closed, and none does."""
    key, version = draw(st.sampled_from(SERVED))
    body = draw(st.from_type(load_request_schema(key, version)))
    frame = request_frame(body)[4:]
    try:
        _, used = entity_reader(type(body).__header_schema__)(frame, 0)
        entity_reader(type(body))(frame, used)
    except ValueError:
        assume(False)
    return body


def body_of(frame: bytes) -> bytes:
    return frame[4:]  # without the size prefix


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(served_requests(), st.integers(-(2**31), 2**31 - 1))
def test_every_served_version_decodes_what_kio_encodes(body: Any, correlation_id: int) -> None:
    parsed = parse_request(body_of(request_frame(body, correlation_id, "c")), REGISTRY.served)
    assert parsed == Request(body.__api_key__, body.__version__, correlation_id, "c", body)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(served_requests(), st.data())
def test_truncated_frames_are_malformed_and_bytes_after_the_body_are_ignored(body: Any, data: st.DataObject) -> None:
    frame = body_of(request_frame(body))
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(MalformedFrame):
        parse_request(frame[:cut], REGISTRY.served)
    extra = data.draw(st.binary(min_size=1, max_size=8))  # Kafka ignores them; librdkafka 2.16 sends some
    assert parse_request(frame + extra, REGISTRY.served).body == body


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_a_request_or_malformed(frame: bytes) -> None:
    with contextlib.suppress(MalformedFrame):
        parse_request(frame, REGISTRY.served)


def answer_body(frame: bytes, api_key: int, version: int) -> tuple[int, Any]:
    response_type = load_response_schema(api_key, version)
    header, used = entity_reader(response_type.__header_schema__)(frame[4:], 0)
    body, size = entity_reader(response_type)(frame[4:], used)
    assert 4 + used + size == len(frame)
    return header.correlation_id, body


def test_a_too_new_api_versions_gets_the_v0_answer_with_the_served_list() -> None:
    request = parse_request(body_of(raw_frame(18, 9, 77)), REGISTRY.served)
    assert request.body is None
    answer = unsupported_answer(request, REGISTRY.unsupported_api_versions)
    assert answer is not None
    correlation_id, body = answer_body(answer, 18, 0)
    assert correlation_id == 77 and body.error_code == 35
    listed = {(k.api_key, k.min_version, k.max_version) for k in body.api_keys}
    assert listed == {(a.key, a.min_version, a.max_version) for a in REGISTRY.by_key.values()}
    assert (18, 0, 3) in listed and (3, 1, 12) in listed


def test_unsupported_versions_of_other_apis() -> None:
    # Fetch v13 (topic ids) has a top-level error code: UNSUPPORTED_VERSION in it.
    fetch = unsupported_answer(Request(1, 13, 5), REGISTRY.unsupported_api_versions)
    assert fetch is not None
    assert answer_body(fetch, 1, 13) == (5, answer_body(fetch, 1, 13)[1])
    assert answer_body(fetch, 1, 13)[1].error_code == 35
    # Metadata v0 cannot say it: None (the server closes the connection, as Kafka does).
    assert unsupported_answer(Request(3, 0, 6), REGISTRY.unsupported_api_versions) is None
    # An API key kio does not know: the correlation id and the error code alone.
    assert unsupported_answer(Request(999, 0, 7), REGISTRY.unsupported_api_versions) == struct.pack(">iih", 6, 7, 35)


def test_response_headers_follow_the_version_and_api_versions_always_uses_v0() -> None:
    api_versions = REGISTRY.api_versions(load_response_schema(18, 3))
    framed = encode_response(9, api_versions)
    assert framed[4:8] == struct.pack(">i", 9) and framed[8:10] == b"\0\0"  # error code right after: no tags
    metadata = make(
        load_response_schema(3, 12),
        throttle_time=api_versions.throttle_time,
        brokers=(),
        cluster_id=None,
        controller_id=1,
        topics=(),
    )
    framed = encode_response(9, metadata)
    assert framed[8] == 0  # header v1: an empty tagged-field section after the correlation id
    assert answer_body(framed, 3, 12) == (9, metadata)


def test_the_registry_refuses_a_key_twice() -> None:
    async def nothing(request: Any, ctx: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="registered twice"):
        Registry([Api(3, "Metadata", 1, 12, nothing), Api(3, "Other", 0, 1, nothing)])


# -- against a real node ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    root: Path = tmp_path_factory.mktemp("kafka-frames")
    (kafka_port,) = free_ports(1)
    args = [
        f"--kafka-listen=127.0.0.1:{kafka_port}",
        "--max-request-bytes=2097152",
        f"--kafka-connections-max-idle-ms={IDLE_MS}",
        f"--max-inflight-requests-per-ip={PER_IP}",
    ]
    node = NodeProcess(root / "node-1", 1, args)
    try:
        node.start()
        wait_broker_alive(node)
        with Admin(bootstrap_servers=node.bootstrap) as admin:
            admin.create_topics([NewTopic("quiet", 1, 1)])
        yield node, f"127.0.0.1:{kafka_port}"
    finally:
        node.close()


def fuzz_payloads(rng: random.Random, count: int) -> Iterator[bytes]:
    """Random bytes, sizes that lie, truncated and mutated valid frames."""
    valid = [
        request_frame(make(ApiVersionsRequest, client_software_name="fuzz", client_software_version="1")),
        request_frame(
            make(
                MetadataRequest, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
            )
        ),
        raw_frame(0, 9, 1, b"\0\0\xff\xff"),
    ]
    for i in range(count):
        kind = i % 4
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 64))
        elif kind == 1:
            body = rng.randbytes(rng.randrange(0, 32))
            yield struct.pack(">i", rng.choice([-1, 0, 3, 2**31 - 1, len(body) + 10, 2_000_000])) + body
        elif kind == 2:
            whole = rng.choice(valid)
            cut = rng.randrange(4, len(whole))
            yield struct.pack(">i", cut - 4) + whole[4:cut]
        else:
            mutated = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(8, len(mutated))] = rng.randrange(256)  # the size kept, the content not
            yield bytes(mutated)


def test_fuzzed_frames_close_their_connection_and_the_node_keeps_serving(kafka_node: tuple[NodeProcess, str]) -> None:
    node, address = kafka_node
    rng = random.Random(18)
    for payload in fuzz_payloads(rng, 600):
        conn = RawConnection(address)
        try:
            conn.send(payload)
            conn.sock.shutdown(1)  # SHUT_WR: the server sees the end of what we send
            assert conn.closed_by_server(5.0), f"the server kept open a connection after {payload!r}"
        finally:
            conn.close()
    conn = RawConnection(address)
    try:
        versions = conn.call(make(ApiVersionsRequest, client_software_name="after", client_software_version="1"))
        assert versions.error_code == 0 and any(k.api_key == 0 for k in versions.api_keys)
        metadata = conn.call(
            make(
                MetadataRequest, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
            ),
            2,
        )
        assert [b.node_id for b in metadata.brokers] == [1]
    finally:
        conn.close()
    assert node.proc is not None and node.proc.poll() is None
    assert "closing Kafka connection from" in node.log_text()


def long_poll(ms: int) -> Any:
    """A fetch of the empty topic ``quiet``: it waits ``ms`` for data that never comes."""
    return make(
        FetchRequest,
        cluster_id=None,
        max_wait=timedelta(milliseconds=ms),
        min_bytes=1,
        isolation_level=0,
        topics=(
            make(
                FetchTopic,
                topic="quiet",
                partitions=(make(FetchPartition, partition=0, fetch_offset=0, partition_max_bytes=1024),),
            ),
        ),
        forgotten_topics_data=(),
    )


def test_an_idle_connection_is_closed_but_one_in_a_long_poll_is_not(kafka_node: tuple[NodeProcess, str]) -> None:
    node, address = kafka_node
    idle = RawConnection(address)
    try:
        started = time.monotonic()
        assert idle.closed_by_server(10.0)
        assert time.monotonic() - started >= IDLE_MS / 1000 * 0.9
    finally:
        idle.close()
    polling = RawConnection(address)
    try:
        fetch = long_poll(2 * IDLE_MS)
        started = time.monotonic()
        answer = polling.call(fetch, 7)  # parked past the idle time, then answered
        assert time.monotonic() - started >= 2 * IDLE_MS / 1000 * 0.9
        assert answer.responses[0].partitions[0].error_code == 0
        assert polling.call(make(ApiVersionsRequest, client_software_name="x", client_software_version="1"), 8)
    finally:
        polling.close()
    assert "closing idle Kafka connection" in node.log_text()


def test_a_request_over_the_per_ip_limit_closes_its_connection(kafka_node: tuple[NodeProcess, str]) -> None:
    node, address = kafka_node
    versions = make(ApiVersionsRequest, client_software_name="x", client_software_version="1")
    limited = RawConnection(address, source_host="127.0.0.3")
    other = RawConnection(address, source_host="127.0.0.4")
    try:
        parked = b"".join(request_frame(long_poll(1500), i) for i in range(1, PER_IP + 1))
        limited.send(parked + request_frame(versions, 99))  # the fifth from 127.0.0.3 is over the limit
        assert other.call(versions, 1).error_code == 0  # another address is not limited
        assert limited.closed_by_server()
    finally:
        limited.close()
        other.close()
    again = RawConnection(address, source_host="127.0.0.3")
    try:
        assert again.call(versions, 2).error_code == 0  # the refused connection's counts were given back
    finally:
        again.close()
    assert f"client address 127.0.0.3 has {PER_IP} requests in flight" in node.log_text()
