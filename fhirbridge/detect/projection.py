"""Small read-only projections of the FHIR fields detection needs.

Parsing incoming JSON into full ``fhir.resources`` models costs about 30x a JSON parse;
these projections read only what the engine uses: :meth:`EncounterView.of` from a parsed
dict, :meth:`EncounterView.from_raw` straight from the bytes (msgspec structs of only those
fields, the rest of the document skipped and never built), with the same answers.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from fhirbridge.values import narrow_decode, parse_instant, parse_json

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
        locations = tuple(
            _location_stay(
                local_reference(item.get("location")),
                item.get("status"),
                (item.get("period") or {}).get("start"),
                (item.get("period") or {}).get("end"),
            )
            for item in resource.get("location") or ()
            if isinstance(item, Mapping)
        )
        meta = resource.get("meta") or {}
        return cls._built(
            id=resource.get("id"),
            status=resource.get("status"),
            class_code=class_code,
            history=history,
            patient=local_reference(resource.get("subject")),
            start=period.get("start"),
            end=period.get("end"),
            disposition=(system, code),
            admit_source=admit_source,
            service_provider=local_reference(resource.get("serviceProvider")),
            part_of=local_reference(resource.get("partOf")),
            locations=locations,
            last_updated=meta.get("lastUpdated"),
            version_id=meta.get("versionId"),
        )

    @classmethod
    def from_raw(cls, raw: bytes) -> EncounterView:
        """Project an Encounter from its JSON bytes, without building the rest of it.

        The same view as ``EncounterView.of(json.loads(raw))``: what the typed decode cannot
        read (a member of an unusual type, invalid JSON) is projected from the parsed dict,
        which then answers (or raises) as :meth:`of` does.
        """
        found = narrow_decode(_ENCOUNTER, raw)
        if found is None:
            resource = parse_json(raw)
            if not isinstance(resource, Mapping):
                raise ValueError("not a JSON object") from None
            return cls.of(resource)
        klass = found.class_
        hospitalization = found.hospitalization
        system, code = _concept_code(
            hospitalization.dischargeDisposition if hospitalization else None
        )
        admit_source = _concept_code(hospitalization.admitSource if hospitalization else None)[1]
        history = [
            (parse_instant(item.period.start if item.period else None), str(item.class_.code))
            for item in found.classHistory or ()
            if item.class_ is not None and item.class_.code
        ]
        locations = tuple(
            _location_stay(
                local_reference(item.location.reference if item.location else None),
                item.status,
                item.period.start if item.period else None,
                item.period.end if item.period else None,
            )
            for item in found.location or ()
        )
        period, meta = found.period, found.meta
        return cls._built(
            id=found.id,
            status=found.status,
            class_code=str(klass.code or "") if klass is not None else "",
            history=history,
            patient=_ref(found.subject),
            start=period.start if period else None,
            end=period.end if period else None,
            disposition=(system, code),
            admit_source=admit_source,
            service_provider=_ref(found.serviceProvider),
            part_of=_ref(found.partOf),
            locations=locations,
            last_updated=meta.lastUpdated if meta else None,
            version_id=meta.versionId if meta else None,
        )

    @classmethod
    def _built(
        cls,
        *,
        id: Any,
        status: Any,
        class_code: str,
        history: list[tuple[datetime | None, str]],
        patient: str | None,
        start: Any,
        end: Any,
        disposition: tuple[Any, str | None],
        admit_source: str | None,
        service_provider: str | None,
        part_of: str | None,
        locations: tuple[LocationStay, ...],
        last_updated: Any,
        version_id: Any,
    ) -> EncounterView:
        """The view of what :meth:`of` and :meth:`from_raw` read (JSON values as found)."""
        history.sort(key=lambda pair: (pair[0] is None, pair[0] or datetime.min))
        # when the current class began: the start of the last classHistory entry of that class
        class_since = next(
            (when for when, code in reversed(history) if code == class_code and when), None
        )
        # the engine keeps many views (its cache of snapshots): the texts that recur across
        # them (codes, statuses, references) are shared, not one copy per view
        return cls(
            id=str(id or ""),
            status=_shared(str(status or "unknown")),
            class_code=_shared(class_code),
            class_history=tuple(_shared(code) for _, code in history),
            class_since=class_since,
            patient=_shared(patient),
            start=parse_instant(start),
            end=parse_instant(end),
            disposition_system=_shared(disposition[0]),
            disposition_code=_shared(disposition[1]),
            admit_source=_shared(admit_source),
            service_provider=_shared(service_provider),
            part_of=_shared(part_of),
            locations=locations,
            last_updated=parse_instant(last_updated),
            version_id=_shared(str(version_id or "")),
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


def _shared(text: Any) -> Any:
    """One copy of a text that recurs across views (``sys.intern``); other values as they are."""
    return sys.intern(text) if type(text) is str else text


def _location_stay(location: str | None, status: Any, start: Any, end: Any) -> LocationStay:
    return LocationStay(
        location=_shared(location or ""),
        status=_shared(str(status or "")),
        start=parse_instant(start),
        end=parse_instant(end),
    )


# -- the typed decode of what EncounterView reads (every other member is skipped) ----------


class _Coding(msgspec.Struct, gc=False):
    system: Any = None
    code: Any = None


class _Concept(msgspec.Struct, gc=False):
    coding: list[_Coding] | None = None
    system: Any = None
    code: Any = msgspec.UNSET  # a Coding given where a CodeableConcept belongs


class _Period(msgspec.Struct, gc=False):
    start: Any = None
    end: Any = None


class _Reference(msgspec.Struct, gc=False):
    reference: str | None = None


class _ClassHistory(msgspec.Struct, gc=False, rename={"class_": "class"}):
    class_: _Coding | None = None
    period: _Period | None = None


class _Location(msgspec.Struct, gc=False):
    location: _Reference | None = None
    status: Any = None
    period: _Period | None = None


class _Hospitalization(msgspec.Struct, gc=False):
    dischargeDisposition: _Concept | None = None
    admitSource: _Concept | None = None


class _Meta(msgspec.Struct, gc=False):
    lastUpdated: Any = None
    versionId: Any = None


class _Encounter(msgspec.Struct, gc=False, rename={"class_": "class"}):
    id: Any = None
    status: Any = None
    class_: _Coding | None = None
    classHistory: list[_ClassHistory] | None = None
    subject: _Reference | None = None
    period: _Period | None = None
    hospitalization: _Hospitalization | None = None
    serviceProvider: _Reference | None = None
    partOf: _Reference | None = None
    location: list[_Location] | None = None
    meta: _Meta | None = None


_ENCOUNTER = msgspec.json.Decoder(_Encounter)


def _ref(value: _Reference | None) -> str | None:
    return local_reference(value.reference) if value is not None else None


def _concept_code(concept: _Concept | None) -> tuple[str | None, str | None]:
    """:func:`_coding` on the typed decode."""
    if concept is None:
        return None, None
    codings: list[Any] = concept.coding or (
        [_Coding(concept.system, concept.code)] if concept.code is not msgspec.UNSET else []
    )
    for coding in codings:
        if coding.code:
            return coding.system, str(coding.code)
    return None, None
