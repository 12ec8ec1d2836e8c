"""``ketch cluster add-controller|remove-controller`` and the quorum part of ``cluster describe``.

The controller quorum's voters change one at a time through the Raft log
(KIP-853; coordinator/raft/membership.py has the rules):

- ``add-controller --node N``: controller N must be running (it starts as an
  observer when it is not a voter) and catch up; the active controller then
  commits the new voter set. Its address is the one it advertises, or
  ``--address``.
- ``remove-controller --node N``: N stops being a voter (it keeps following the
  log as an observer while it runs). Removing the active controller makes it
  step down once the change commits. With ``controller_quorum_auto_join`` on
  (the default) a controller rejoins by itself only when its disk was wiped
  (the voter set names its old directory), never after a removal.

Both find the active controller through any bootstrap server (each is tried in
turn) and retry while there is none (an election) until ``--timeout``. Errors are the node's typed
errors: DUPLICATE_VOTER, VOTER_NOT_FOUND, REQUEST_TIMED_OUT (with the reason,
e.g. the new controller is not running or has not caught up).
"""

from __future__ import annotations

import argparse
from typing import Any

from ketch.aio.connection import translate_rpc_error
from ketch.bootstrap import bootstrap_arg, client_security, login_metadata
from ketch.errors import ErrorCode, KetchError
from ketch.tls import open_channel


def register_cluster(sub: Any) -> None:
    add = sub.add_parser("add-controller", help="make a running controller a voter of the quorum (KIP-853)")
    add.add_argument("--node", type=int, required=True, help="the controller's node id")
    add.add_argument("--address", default="", help="HOST:PORT the other controllers reach it at (default: its own)")
    add.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it to catch up and commit")
    bootstrap_arg(add)
    add.set_defaults(handler=add_controller)
    remove = sub.add_parser("remove-controller", help="remove a voter from the controller quorum (KIP-853)")
    remove.add_argument("--node", type=int, required=True, help="the voter's node id")
    remove.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the change to commit")
    bootstrap_arg(remove)
    remove.set_defaults(handler=remove_controller)


ATTEMPT_TIMEOUT_S = 2.0  # one bootstrap server's turn: a paused node must not hold the command


def describe_quorum(bootstrap: str, timeout_s: float = 10.0) -> Any:
    """``DescribeQuorumResponse`` from the first bootstrap server that answers it, each asked for at
    most ``ATTEMPT_TIMEOUT_S`` while others are left to ask (a dead or paused one costs that, not the
    command)."""
    import grpc

    from ketch.api.v1 import controller_pb2 as cpb
    from ketch.api.v1 import controller_pb2_grpc

    errors: list[str] = []
    addresses = [a.strip() for a in bootstrap.split(",") if a.strip()]
    for n, address in enumerate(addresses):
        attempt = timeout_s if n == len(addresses) - 1 else min(timeout_s, ATTEMPT_TIMEOUT_S)
        try:
            with open_channel(address, client_security()) as channel:
                return controller_pb2_grpc.KetchControllerStub(channel).DescribeQuorum(
                    cpb.DescribeQuorumRequest(), timeout=attempt, metadata=login_metadata(channel, address)
                )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise translate_rpc_error(exc, address) from None
            errors.append(f"{address}: {exc.code().name}")
    raise KetchError(
        "no bootstrap server answered as a controller (" + "; ".join(errors) + ")",
        code=ErrorCode.NOT_CONTROLLER,
    )


def describe_quorum_at_leader(bootstrap: str, timeout_s: float = 10.0) -> Any:
    """``DescribeQuorumResponse`` from the active controller when it can be reached (only it knows the
    observers and every voter's progress), else from the first bootstrap server that answers."""
    first = describe_quorum(bootstrap, timeout_s)
    leader = {v.node_id: v.address for v in first.voters}.get(first.leader_id)
    if first.leader_id == first.node_id or not leader:
        return first
    try:
        return describe_quorum(leader, timeout_s)
    except KetchError:
        return first


def _change(args: argparse.Namespace, call: str, request: Any) -> Any:
    """Send the change to the active controller, following NOT_CONTROLLER, until ``--timeout``
    (an election after the active controller removed itself takes a moment)."""
    import time

    from ketch.api.v1 import controller_pb2_grpc

    deadline = time.monotonic() + args.timeout
    while True:
        quorum = describe_quorum_at_leader(args.bootstrap)
        address = {v.node_id: v.address for v in quorum.voters}.get(quorum.leader_id)
        if address:
            with open_channel(address, client_security()) as channel:
                stub = controller_pb2_grpc.KetchControllerStub(channel)
                response = getattr(stub, call)(
                    request, timeout=args.timeout + 5, metadata=login_metadata(channel, address)
                )
            if response.error_code != ErrorCode.NOT_CONTROLLER:
                break
            problem = response.error_message
        else:
            problem = "no active controller is known"
        if time.monotonic() > deadline:
            raise KetchError(f"{problem}; retry shortly", code=ErrorCode.NOT_CONTROLLER)
        time.sleep(0.2)
    if response.error_code != ErrorCode.NONE:
        raise KetchError(response.error_message, code=ErrorCode(response.error_code))
    return response


def _print_voters(response: Any) -> None:
    voters = ", ".join(f"{v.node_id} ({v.address}, directory {v.directory_id or '-'})" for v in response.voters)
    print(f"Committed at Raft index {response.index}. Voters: {voters}")


def add_controller(args: argparse.Namespace) -> int:
    from ketch.api.v1 import controller_pb2 as cpb

    request = cpb.AddRaftVoterRequest(node_id=args.node, address=args.address, timeout_ms=int(args.timeout * 1000))
    response = _change(args, "AddRaftVoter", request)
    print(f"Controller {args.node} is a voter.")
    _print_voters(response)
    return 0


def remove_controller(args: argparse.Namespace) -> int:
    from ketch.api.v1 import controller_pb2 as cpb

    request = cpb.RemoveRaftVoterRequest(node_id=args.node, timeout_ms=int(args.timeout * 1000))
    response = _change(args, "RemoveRaftVoter", request)
    print(f"Controller {args.node} is no longer a voter; it may be stopped.")
    _print_voters(response)
    return 0
