"""Raft values <-> protobuf (``ketch.v1`` raft.proto): the only wire and disk encoding.

The core's dataclasses (coordinator/raft/messages.py) map one to one onto the
protobuf messages of ``proto/ketch/api/v1/raft.proto``: same field names, enum
numbers equal to the core's ``IntEnum`` values. Nothing here executes code from
its input (no pickle, no eval): a peer can at worst send values the core then
ignores or rejects.

Rules:
- ``Message.snapshot`` is ``None`` unless the message carries one; protobuf
  presence on the ``snapshot`` field keeps that distinction (an empty
  ``Snapshot()`` and no snapshot are different things).
- Decoding validates what the core's types cannot express themselves: an
  unknown message type or entry kind (proto3 enums are open, a newer peer may
  send values we do not know) raises ``ValueError``; the transport drops that
  one message and keeps the rest of the batch.
- Voter sets (CONF entries, snapshots) travel as ``RaftVoter``s. A snapshot
  stored before directory ids existed has only ``voters`` (ids); it decodes to
  unbound voters. A CONF entry with no voters is refused (``ValueError``).
- Storage uses the same messages (``RaftEntry``, ``RaftHardState``,
  ``RaftSnapshot``) serialized to bytes, via the ``*_bytes`` helpers. Bytes that
  are not the message raise ``ValueError`` naming it (protobuf's ``DecodeError``
  is not one), as every other refusal here does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from coordinator.raft import Entry, EntryKind, HardState, Message, MessageType, Snapshot, Voter
from ketch.api.v1 import raft_pb2

# Looked up by name, so a core enum without its proto twin (or with another number) fails at import.
_TYPE_TO_PB: dict[MessageType, raft_pb2.RaftMessageType] = {
    t: getattr(raft_pb2, f"RAFT_MESSAGE_TYPE_{t.name}") for t in MessageType
}
_KIND_TO_PB: dict[EntryKind, raft_pb2.RaftEntryKind] = {
    k: getattr(raft_pb2, f"RAFT_ENTRY_KIND_{k.name}") for k in EntryKind
}
if any(int(k) != int(v) for k, v in (*_TYPE_TO_PB.items(), *_KIND_TO_PB.items())):
    raise ImportError("raft.proto enum numbers differ from coordinator.raft's")
_MESSAGE_TYPES = frozenset(int(t) for t in MessageType)
_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)


# -- entries -------------------------------------------------------------------------------


def entry_to_pb(e: Entry, out: raft_pb2.RaftEntry | None = None) -> raft_pb2.RaftEntry:
    pb = raft_pb2.RaftEntry() if out is None else out
    pb.term = e.term
    pb.index = e.index
    pb.data = e.data
    pb.kind = _KIND_TO_PB[e.kind]
    for v in e.voters:
        pb.voters.add(id=v.id, directory=v.directory, address=v.address)
    return pb


def _voters_from_pb(voters: Iterable[raft_pb2.RaftVoter]) -> tuple[Voter, ...]:
    out = tuple(Voter(v.id, v.directory, v.address) for v in voters)
    if any(v.id == 0 for v in out) or len({v.id for v in out}) != len(out):
        raise ValueError(f"a Raft voter set needs distinct positive ids, got {[v.id for v in out]}")
    return out


def entry_from_pb(pb: raft_pb2.RaftEntry) -> Entry:
    kind = int(pb.kind)
    if kind not in _ENTRY_KINDS:
        raise ValueError(f"unknown Raft entry kind {kind}")
    voters = _voters_from_pb(pb.voters)
    if kind == EntryKind.CONF and not voters:
        raise ValueError("a Raft CONF entry without voters")
    return Entry(term=pb.term, index=pb.index, data=pb.data, kind=EntryKind(kind), voters=voters)


# -- hard state and snapshot ---------------------------------------------------------------


def hard_state_to_pb(hs: HardState) -> raft_pb2.RaftHardState:
    return raft_pb2.RaftHardState(term=hs.term, vote=hs.vote, commit=hs.commit)


def hard_state_from_pb(pb: raft_pb2.RaftHardState) -> HardState:
    return HardState(term=pb.term, vote=pb.vote, commit=pb.commit)


def snapshot_to_pb(s: Snapshot, out: raft_pb2.RaftSnapshot | None = None) -> raft_pb2.RaftSnapshot:
    pb = raft_pb2.RaftSnapshot() if out is None else out
    pb.index = s.index
    pb.term = s.term
    pb.voters[:] = [v.id for v in s.voters]
    for v in s.voters:
        pb.voter_set.add(id=v.id, directory=v.directory, address=v.address)
    pb.data = s.data
    return pb


def snapshot_from_pb(pb: raft_pb2.RaftSnapshot) -> Snapshot:
    voters = _voters_from_pb(pb.voter_set) if pb.voter_set else tuple(Voter(i) for i in pb.voters)
    return Snapshot(index=pb.index, term=pb.term, voters=voters, data=pb.data)


# -- messages ------------------------------------------------------------------------------


def message_to_pb(m: Message) -> raft_pb2.RaftMessage:
    pb = raft_pb2.RaftMessage(
        type=_TYPE_TO_PB[m.type],
        frm=m.frm,
        to=m.to,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
        directory=m.directory,
        to_directory=m.to_directory,
    )
    for e in m.entries:
        entry_to_pb(e, pb.entries.add())
    if m.snapshot is not None:
        snapshot_to_pb(m.snapshot, pb.snapshot)
    return pb


def message_from_pb(pb: raft_pb2.RaftMessage) -> Message:
    t = int(pb.type)
    if t not in _MESSAGE_TYPES:
        raise ValueError(f"unknown Raft message type {t}")
    return Message(
        type=MessageType(t),
        frm=pb.frm,
        to=pb.to,
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=tuple(entry_from_pb(e) for e in pb.entries),
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        snapshot=snapshot_from_pb(pb.snapshot) if pb.HasField("snapshot") else None,
        context=pb.context,
        directory=pb.directory,
        to_directory=pb.to_directory,
    )


def batch_to_pb(messages: list[Message] | tuple[Message, ...]) -> raft_pb2.RaftBatch:
    batch = raft_pb2.RaftBatch()
    batch.messages.extend(message_to_pb(m) for m in messages)
    return batch


# -- storage bytes -------------------------------------------------------------------------


def entry_to_bytes(e: Entry) -> bytes:
    return entry_to_pb(e).SerializeToString()


P = TypeVar("P", bound=ProtoMessage)


def _parse(cls: type[P], data: bytes) -> P:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"{len(data)} bytes are not a {cls.DESCRIPTOR.name}: {exc}") from None


def entry_from_bytes(data: bytes) -> Entry:
    return entry_from_pb(_parse(raft_pb2.RaftEntry, data))


def hard_state_to_bytes(hs: HardState) -> bytes:
    return hard_state_to_pb(hs).SerializeToString()


def hard_state_from_bytes(data: bytes) -> HardState:
    return hard_state_from_pb(_parse(raft_pb2.RaftHardState, data))


def snapshot_to_bytes(s: Snapshot) -> bytes:
    return snapshot_to_pb(s).SerializeToString()


def snapshot_from_bytes(data: bytes) -> Snapshot:
    return snapshot_from_pb(_parse(raft_pb2.RaftSnapshot, data))
