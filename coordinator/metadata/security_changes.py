"""The controller's security commands as metadata records: CreateAcls and DeleteAcls (rules in
acls.py), AlterUserScramCredentials (rules in scram.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.metadata.acls import AclBinding, invalid, select
from coordinator.metadata.results import ControllerResult
from coordinator.metadata.scram import MAX_ITERATIONS, MECHANISMS, MIN_ITERATIONS, ScramCredential
from coordinator.metadata.scram import invalid as invalid_user
from ketch.api.v1 import metadata_pb2 as mpb
from ketch.errors import ErrorCode


def create(
    acls: Mapping[str, AclBinding], creations: Sequence[AclBinding], ids: Sequence[str]
) -> ControllerResult[list[tuple[ErrorCode, str]]]:
    """Records for the valid, new creations, under ``ids`` (fresh, one per creation, from the
    driver: a pure rule draws no random numbers); a result per creation."""
    existing = set(acls.values())
    records: list[mpb.MetadataRecord] = []
    results: list[tuple[ErrorCode, str]] = []
    for binding, acl_id in zip(creations, ids, strict=True):
        problem = invalid(binding)
        if problem is not None:
            results.append((ErrorCode.INVALID_REQUEST, problem))
            continue
        if binding not in existing:
            existing.add(binding)
            records.append(binding.record(acl_id))
        results.append((ErrorCode.NONE, ""))
    return ControllerResult(records, results)


def delete(acls: Mapping[str, AclBinding], filters: Sequence[AclBinding]) -> ControllerResult[list[list[AclBinding]]]:
    """Records removing every ACL any filter matches; per filter, the ACLs it matched."""
    removed: set[str] = set()
    records: list[mpb.MetadataRecord] = []
    matched: list[list[AclBinding]] = []
    for f in filters:
        found = select(acls, f)
        matched.append([acl for _, acl in found])
        for acl_id, _ in found:
            if acl_id not in removed:
                removed.add(acl_id)
                records.append(mpb.MetadataRecord(remove_acl=mpb.RemoveAccessControlEntryRecord(id=acl_id)))
    return ControllerResult(records, matched)


def alter_scram(
    credentials: Mapping[tuple[str, str], ScramCredential],
    deletions: Sequence[tuple[str, str]],
    upsertions: Sequence[ScramCredential],
) -> ControllerResult[list[tuple[str, ErrorCode, str]]]:
    """Records for the valid changes; a (user, code, message) per deletion, then per upsertion."""
    present = set(credentials)
    records: list[mpb.MetadataRecord] = []
    results: list[tuple[str, ErrorCode, str]] = []
    for name, mechanism in deletions:
        problem = invalid_user(name, mechanism)
        if problem is None and (name, mechanism) not in present:
            results.append((name, ErrorCode.RESOURCE_NOT_FOUND, f"user {name!r} has no {mechanism} credential"))
            continue
        if problem is not None:
            results.append((name, ErrorCode.INVALID_REQUEST, problem))
            continue
        present.discard((name, mechanism))
        records.append(
            mpb.MetadataRecord(
                remove_scram_credential=mpb.RemoveUserScramCredentialRecord(name=name, mechanism=mechanism)
            )
        )
        results.append((name, ErrorCode.NONE, ""))
    for cred in upsertions:
        problem = invalid_user(cred.name, cred.mechanism)
        if problem is None and not MIN_ITERATIONS <= cred.iterations <= MAX_ITERATIONS:
            problem = f"iterations {cred.iterations} is outside {MIN_ITERATIONS}..{MAX_ITERATIONS}"
        if problem is None and not (len(cred.stored_key) == len(cred.server_key) == MECHANISMS[cred.mechanism]):
            problem = f"the keys of a {cred.mechanism} credential are {MECHANISMS[cred.mechanism]} bytes"
        if problem is None and not cred.salt:
            problem = "a SCRAM credential needs a salt"
        if problem is not None:
            results.append((cred.name, ErrorCode.INVALID_REQUEST, problem))
            continue
        present.add(cred.key)
        records.append(cred.record())
        results.append((cred.name, ErrorCode.NONE, ""))
    return ControllerResult(records, results)
