"""Small read-only projections of the FHIR fields detection needs.

Parsing incoming JSON into full ``fhir.resources`` models costs about 30x a JSON parse;
these projections read only what the engine uses, straight from the dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhirbridge.values import parse_instant

__all__ = ["EncounterView", "LocationStay", "local_reference", "resolve_references", "version_key"]

INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC", "OBSENC", "SS"})
ED_CLASSES = frozenset({"EMER"})
ED_ACTIVE = frozenset({"arrived", "triaged", "in-progress", "onleave"})
VOIDED = frozenset({"cancelled", "entered-in-error"})


def local_reference(value: Any) -> str | None:
    """``Type/id`` from a Reference dict or string, dropping a base URL and ``_history``."""
    if isinstance(value, Mapping):
        value = value.get("reference")
    if not isinstance(value, str) or not value or value.startswith("#"):
        return None
    parts = value.split("?", 1)[0].rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        return None
    return f"{parts[-2]}/{parts[-1]}"


def resolve_references(value: Any, ids: Mapping[str, str]) -> Any:
    """``value`` with every ``reference`` found in ``ids`` replaced (e.g. a message Bundle's
    ``urn:uuid:`` fullUrls -> ``Type/id``), at any depth."""
    if isinstance(value, Mapping):
        return {
            key: ids.get(item, item)
            if key == "reference" and isinstance(item, str)
            else resolve_references(item, ids)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [resolve_references(item, ids) for item in value]
    return value


def version_key(resource: Mapping[str, Any]) -> tuple[datetime | None, int | str]:
    """An ordering key for versions of one resource: lastUpdated, then numeric versionId."""
    meta = resource.get("meta") or {}
    updated = parse_instant(meta.get("lastUpdated"))
    version = str(meta.get("versionId") or "")
    return updated, int(version) if version.isdigit() else version


def _coding(concept: Any) -> tuple[str | None, str | None]:
    if isinstance(concept, Mapping):
        codings = concept.get("coding") or ([concept] if "code" in concept else [])
        for coding in codings:
            if isinstance(coding, Mapping) and coding.get("code"):
                return coding.get("system"), str(coding["code"])
    return None, None


@dataclass(frozen=True, slots=True)
class LocationStay:
    """One ``Encounter.location`` entry."""

    location: str
    status: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class EncounterView:
    """What detection reads of an Encounter."""

    id: str
    status: str
    class_code: str
    class_history: tuple[str, ...]
    class_since: datetime | None
    patient: str | None
    start: datetime | None
    end: datetime | None
    disposition_system: str | None
    disposition_code: str | None
    admit_source: str | None
    service_provider: str | None
    part_of: str | None
    locations: tuple[LocationStay, ...]
    last_updated: datetime | None
    version_id: str

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> EncounterView:
        """Project an Encounter dict."""
        klass = resource.get("class") or {}
        class_code = str(klass.get("code") or "") if isinstance(klass, Mapping) else ""
        period = resource.get("period") or {}
        hospitalization = resource.get("hospitalization") or {}
        system, code = _coding(hospitalization.get("dischargeDisposition"))
        _, admit_source = _coding(hospitalization.get("admitSource"))
        history = []
        for item in resource.get("classHistory") or ():
            entry = item.get("class") or {}
            if entry.get("code"):
                history.append(
                    (parse_instant((item.get("period") or {}).get("start")), str(entry["code"]))
                )
        history.sort(key=lambda pair: (pair[0] is None, pair[0] or datetime.min))
        # when the current class began: the start of the last classHistory entry of that class
        class_since = next(
            (start for start, code in reversed(history) if code == class_code and start), None
        )
        locations = tuple(
            LocationStay(
                location=local_reference(item.get("location")) or "",
                status=str(item.get("status") or ""),
                start=parse_instant((item.get("period") or {}).get("start")),
                end=parse_instant((item.get("period") or {}).get("end")),
            )
            for item in resource.get("location") or ()
            if isinstance(item, Mapping)
        )
        meta = resource.get("meta") or {}
        return cls(
            id=str(resource.get("id") or ""),
            status=str(resource.get("status") or "unknown"),
            class_code=class_code,
            class_history=tuple(code for _, code in history),
            class_since=class_since,
            patient=local_reference(resource.get("subject")),
            start=parse_instant(period.get("start")),
            end=parse_instant(period.get("end")),
            disposition_system=system,
            disposition_code=code,
            admit_source=admit_source,
            service_provider=local_reference(resource.get("serviceProvider")),
            part_of=local_reference(resource.get("partOf")),
            locations=locations,
            last_updated=parse_instant(meta.get("lastUpdated")),
            version_id=str(meta.get("versionId") or ""),
        )

    @property
    def reference(self) -> str:
        """``Encounter/id``."""
        return f"Encounter/{self.id}"

    @property
    def inpatient(self) -> bool:
        """An inpatient, observation or short-stay encounter."""
        return self.class_code in INPATIENT_CLASSES

    @property
    def emergency(self) -> bool:
        """An emergency department encounter."""
        return self.class_code in ED_CLASSES

    @property
    def ended(self) -> bool:
        """Finished, or with an end to its period (R4 has no 'discharged' status)."""
        return self.status == "finished" or (self.end is not None and self.status not in VOIDED)

    @property
    def voided(self) -> bool:
        """Cancelled or entered in error."""
        return self.status in VOIDED

    @property
    def current_location(self) -> str | None:
        """The active location (else the last one listed without an end)."""
        active = [stay for stay in self.locations if stay.status == "active" and stay.location]
        if active:
            return active[-1].location
        still_open = [
            stay
            for stay in self.locations
            if stay.end is None and stay.location and stay.status != "planned"
        ]
        return still_open[-1].location if still_open else None
