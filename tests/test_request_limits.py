"""The in-flight counting rules (node/request_limits.py), over any sequence of arrivals and ends, and
the error a client raises for a refusal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.request_limits import InflightLimits, peer_ip

PEERS = ["ipv4:10.0.0.1:1000", "ipv4:10.0.0.1:1001", "ipv4:10.0.0.2:1000", "ipv6:[::1]:5000"]


def test_peer_ip_drops_the_port() -> None:
    assert [peer_ip(p) for p in PEERS] == ["10.0.0.1", "10.0.0.1", "10.0.0.2", "::1"]
    assert peer_ip("unix:/tmp/sock") == "/tmp/sock"


def test_each_refusal_names_its_setting() -> None:
    limits = InflightLimits(max_total=3, max_per_connection=1, max_per_ip=2)
    assert limits.admit(PEERS[0]) is None
    assert "max_inflight_requests_per_connection=1" in (limits.admit(PEERS[0]) or "")
    assert limits.admit(PEERS[1]) is None
    assert "max_inflight_requests_per_ip=2" in (limits.admit("ipv4:10.0.0.1:1002") or "")
    assert limits.admit(PEERS[2]) is None
    assert "max_inflight_requests=3" in (limits.admit(PEERS[3]) or "")


@given(
    st.integers(0, 4),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(st.tuples(st.booleans(), st.sampled_from(PEERS)), max_size=60),
)
def test_counts_never_pass_a_limit_and_return_to_zero(
    total: int, per_connection: int, per_ip: int, steps: list[tuple[bool, str]]
) -> None:
    limits = InflightLimits(total, per_connection, per_ip)
    admitted: list[str] = []
    for arrive, peer in steps:
        if arrive:
            before = dict(limits.by_connection)
            if limits.admit(peer) is None:
                admitted.append(peer)
            else:
                assert limits.by_connection == before  # a refusal counts nothing
        elif peer in admitted:
            admitted.remove(peer)
            limits.release(peer)
        assert limits.total == len(admitted)
        assert total == 0 or limits.total <= total
        assert per_connection == 0 or all(n <= per_connection for n in limits.by_connection.values())
        assert per_ip == 0 or all(n <= per_ip for n in limits.by_ip.values())
    for peer in admitted:
        limits.release(peer)
    assert (limits.total, limits.by_connection, limits.by_ip) == (0, {}, {})


def test_the_client_raises_a_retriable_request_limit_error_naming_the_setting() -> None:
    import grpc

    from ketch.aio.connection import translate_rpc_error
    from ketch.errors import MessageTooLargeError, RequestLimitError

    def refused(details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(), details
        )

    limits = InflightLimits(max_total=0, max_per_connection=1, max_per_ip=0)
    limits.admit(PEERS[0])
    err = translate_rpc_error(refused(f"request refused: {limits.admit(PEERS[0])}; try again later"), "Produce")
    assert isinstance(err, RequestLimitError) and err.retriable
    assert "max_inflight_requests_per_connection=1" in str(err)
    too_big = translate_rpc_error(refused("Received message larger than max (3000000 vs. 2000000)"))
    assert isinstance(too_big, MessageTooLargeError) and not too_big.retriable
