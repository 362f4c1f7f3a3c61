"""Heal duplicates: two engine resources that carry one create-once identifier.

Conditional create alone does not stop two racing writers (many servers do not serialise
``If-None-Exist``), so a Task, CarePlan or risk resource can exist twice. Healing keeps the
oldest, marks the others ``entered-in-error`` (moving their identifier to
:data:`~fhirbridge.identity.DUPLICATE_SYSTEM`, so a conditional create finds one match
again), repoints the CarePlan activities that named a duplicate, and records one Provenance
saying why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog

from fhirbridge.clock import Clock
from fhirbridge.fhir.client import FhirClient
from fhirbridge.identity import DUPLICATE_SYSTEM, careplan_identifier, identifier_token
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, IDENTIFIER_SYSTEM
from fhirbridge.writeback.build import build_provenance
from fhirbridge.writeback.versioned import versioned_update

__all__ = ["HEALED_TYPES", "Healer", "engine_identifier"]

log = structlog.get_logger(__name__)

#: The types the engine creates once per identifier.
HEALED_TYPES = ("Task", "CarePlan", "Observation", "RiskAssessment")
RETIRED = "entered-in-error"


def engine_identifier(resource: Mapping[str, Any]) -> str | None:
    """The value of the resource's engine identifier, if it has one."""
    for identifier in resource.get("identifier") or ():
        if identifier.get("system") == IDENTIFIER_SYSTEM and identifier.get("value"):
            return str(identifier["value"])
    return None


def _age(resource: Mapping[str, Any]) -> tuple[str, str, str]:
    """Oldest first: when the engine stamped it, then when the server first kept it, then id
    (so two healers running at once choose the same survivor)."""
    stamped = resource.get("authoredOn") or resource.get("created") or ""
    meta = resource.get("meta") or {}
    return (str(stamped), str(meta.get("lastUpdated") or ""), str(resource.get("id")))


def _retire(keep_ref: str) -> Any:
    def change(resource: dict[str, Any]) -> bool:
        if resource.get("status") == RETIRED:
            return False
        resource["status"] = RETIRED
        for identifier in resource.get("identifier") or ():
            if identifier.get("system") == IDENTIFIER_SYSTEM:
                identifier["system"] = DUPLICATE_SYSTEM
        if resource.get("resourceType") == "Task":
            resource["statusReason"] = {"text": f"duplicate of {keep_ref}"}
        return True

    return change


def _repoint(replaced: Mapping[str, str]) -> Any:
    """A CarePlan change: activities naming a duplicate name the survivor; one per Task."""

    def change(careplan: dict[str, Any]) -> bool:
        seen: set[str] = set()
        kept: list[dict[str, Any]] = []
        changed = False
        for activity in careplan.get("activity") or ():
            reference = activity.get("reference") or {}
            ref = str(reference.get("reference") or "")
            if ref in replaced:
                reference["reference"] = ref = replaced[ref]
                changed = True
            if ref and ref in seen:
                changed = True
                continue
            seen.add(ref)
            kept.append(activity)
        careplan["activity"] = kept
        return changed

    return change


class Healer:
    """Finds and heals duplicates of engine identifiers on one server."""

    def __init__(self, client: FhirClient, *, clock: Clock, agent: str) -> None:
        self.client = client
        self.clock = clock
        self.agent = agent

    async def heal(self, resource_type: str, identifier: str) -> list[str]:
        """Heal the duplicates of one identifier; returns the references retired."""
        found = await self.client.search_all(
            resource_type, {"identifier": identifier_token(identifier)}
        )
        return await self._heal_group(resource_type, identifier, found)

    async def sweep(self, types: Iterable[str] = HEALED_TYPES) -> list[str]:
        """Look through every engine resource of ``types`` for identifiers held twice and heal
        them; returns the references retired."""
        retired: list[str] = []
        for resource_type in types:
            resources = await self.client.search_all(
                resource_type, {"_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}", "_count": 200}
            )
            groups: dict[str, list[dict[str, Any]]] = {}
            for resource in resources:
                value = engine_identifier(resource)
                if value:
                    groups.setdefault(value, []).append(resource)
            for value, group in groups.items():
                if len(group) > 1:
                    retired += await self._heal_group(resource_type, value, group)
        log.info("duplicate_sweep_done", retired=len(retired))
        return retired

    async def _heal_group(
        self, resource_type: str, identifier: str, found: Sequence[dict[str, Any]]
    ) -> list[str]:
        active = [
            r for r in found if r.get("status") != RETIRED and engine_identifier(r) == identifier
        ]
        if len(active) < 2:
            return []
        keep, *duplicates = sorted(active, key=_age)
        keep_ref = f"{resource_type}/{keep['id']}"
        retired: list[str] = []
        for duplicate in duplicates:
            await versioned_update(self.client, duplicate, _retire(keep_ref))
            retired.append(f"{resource_type}/{duplicate['id']}")
        if resource_type == "Task":
            await self._repoint_careplan(keep, dict.fromkeys(retired, keep_ref))
        elif resource_type == "CarePlan":
            await self._merge_careplans(keep, duplicates)
        provenance = build_provenance(
            [keep_ref, *retired],
            recorded=self.clock.now(),
            agent=self.agent,
            activity="UPDATE",
            reason=(
                f"{', '.join(retired)} duplicated {keep_ref} (one engine identifier, written "
                "twice by racing writers): kept the oldest, the others entered-in-error"
            ),
        )
        await self.client.create(provenance)
        log.warning(
            "duplicates_healed", resource_type=resource_type, kept=keep_ref, retired=len(retired)
        )
        return retired

    async def _repoint_careplan(self, task: Mapping[str, Any], replaced: dict[str, str]) -> None:
        patient = (task.get("for") or {}).get("reference")
        if not patient:
            return
        for careplan in await self.client.search_all(
            "CarePlan", {"identifier": identifier_token(careplan_identifier(str(patient)))}
        ):
            if careplan.get("status") != RETIRED:
                await versioned_update(self.client, careplan, _repoint(replaced))

    async def _merge_careplans(
        self, keep: dict[str, Any], duplicates: Sequence[Mapping[str, Any]]
    ) -> None:
        moved = [a for d in duplicates for a in d.get("activity") or ()]

        def change(careplan: dict[str, Any]) -> bool:
            activities = careplan.setdefault("activity", [])
            have = {(a.get("reference") or {}).get("reference") for a in activities}
            added = False
            for activity in moved:
                ref = (activity.get("reference") or {}).get("reference")
                if ref not in have:
                    have.add(ref)
                    activities.append(activity)
                    added = True
            return added

        await versioned_update(self.client, keep, change)
