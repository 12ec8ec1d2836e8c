"""The Python error table matches the wire contract."""

from ketch.api.v1 import ketch_pb2
from ketch.errors import ErrorCode, NotLeaderOrFollowerError, error_for


def test_error_codes_match_the_proto_enum() -> None:
    wire = {v.name: v.number for v in ketch_pb2.DESCRIPTOR.enum_types_by_name["ErrorCode"].values}
    assert wire == {c.name: int(c) for c in ErrorCode}


def test_error_for_builds_typed_retriable_errors() -> None:
    err = error_for(6, "leader moved")
    assert isinstance(err, NotLeaderOrFollowerError)
    assert err.retriable
    assert "NOT_LEADER_OR_FOLLOWER: leader moved" in str(err)
    assert not error_for(10, "too big").retriable
    assert "unknown error code 999" in str(error_for(999))
