"""The versioned update every CarePlan and Task change goes through: read, modify, PUT with
``If-Match``, and on a version conflict re-read and apply the change again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirbridge.errors import VersionConflict
from fhirbridge.fhir.client import FhirClient, WriteResult

__all__ = ["CONFLICT_RETRIES", "Change", "versioned_update"]

CONFLICT_RETRIES = 5

#: Changes a resource in place; returns False when there is nothing to change.
Change = Callable[[dict[str, Any]], bool]


async def versioned_update(
    client: FhirClient,
    resource: dict[str, Any],
    change: Change,
    *,
    retries: int = CONFLICT_RETRIES,
) -> tuple[WriteResult | None, dict[str, Any]]:
    """Apply ``change`` to ``resource`` (as last seen) and write it with ``If-Match`` on its
    version; on a conflict re-read and reapply, up to ``retries`` times.

    Returns the write (``None`` when ``change`` found nothing to do) and the resource as it
    now stands (the server's answer when it sent one back).
    """
    current = resource
    for _ in range(max(1, retries)):
        if not change(current):
            return None, current
        try:
            written = await client.update(current, if_match=current["meta"]["versionId"])
        except VersionConflict:
            current = await client.read(current["resourceType"], current["id"])
            continue
        return written, written.resource if written.resource.get("id") else current
    ref = f"{resource['resourceType']}/{resource['id']}"
    raise VersionConflict(f"{ref} kept changing under us ({retries} tries)", status=412)
