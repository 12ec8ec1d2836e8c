"""The controller's ACL commands: CreateAcls and DeleteAcls as metadata records (rules in acls.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from coordinator.metadata.acls import AclBinding, invalid, select
from coordinator.metadata.results import ControllerResult
from ketch.api.v1 import metadata_pb2 as mpb
from ketch.errors import ErrorCode


def create(
    acls: Mapping[str, AclBinding], creations: Sequence[AclBinding]
) -> ControllerResult[list[tuple[ErrorCode, str]]]:
    """Records for the valid, new creations; a result per creation."""
    existing = set(acls.values())
    records: list[mpb.MetadataRecord] = []
    results: list[tuple[ErrorCode, str]] = []
    for binding in creations:
        problem = invalid(binding)
        if problem is not None:
            results.append((ErrorCode.INVALID_REQUEST, problem))
            continue
        if binding not in existing:
            existing.add(binding)
            records.append(binding.record(uuid.uuid4().hex))
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
