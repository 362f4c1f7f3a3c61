"""How the stores turn values into columns and back, shared so that all three agree.

Every store goes through these functions, the in-memory one included, so a transition's facts
or an outbox payload come back the same way from each (through JSON).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import msgspec
import orjson

from fhirbridge.store.base import DeadLetter, OutboxItem, Stay, StoredTransition
from fhirbridge.values import (
    LazyResource,
    ResourceVersion,
    Transition,
    TransitionKind,
    lazy_resource,
    narrow_decode,
    parse_instant,
)

__all__ = [
    "OUTBOX_SOURCE",
    "REJECTED_SOURCE",
    "Clock",
    "audit_from_row",
    "dead_letter_from_row",
    "dumps",
    "encounter_row",
    "from_iso",
    "iso",
    "lane_key",
    "patient_key",
    "loads_mapping",
    "outbox_from_row",
    "outbox_lane_key",
    "outbox_letter",
    "reference_lane_key",
    "rejected_letter",
    "relative_reference",
    "stay_from_row",
    "stored_transition_from_row",
    "system_clock",
    "transition_body",
    "transition_from_body",
    "transition_rows",
    "utc",
    "version_from_row",
    "version_params",
]

Clock = Callable[[], datetime]

#: The source of the dead letter ``reject`` writes: the process stage could not use the version.
REJECTED_SOURCE = DeadLetter.REJECTED
#: The source of the dead letter of an outbox item that failed for good.
OUTBOX_SOURCE = "outbox"

#: ``Type/id`` at the end of a reference, after an optional base URL, before ``/_history/n``.
_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?/?$"
)


def system_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width ISO 8601 in UTC with microseconds: such strings sort as the instants do."""
    return utc(moment).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    """Read what :func:`iso` wrote."""
    return utc(datetime.fromisoformat(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


_DUMPS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """Compact JSON with sorted keys; dates become ISO text, anything else unknown its ``str``.

    orjson writes it (non-ASCII as UTF-8 rather than ``\\u`` escapes); a value it cannot
    write at all (an integer beyond 64 bits) goes through :func:`_json_default` as text.
    """
    try:
        return orjson.dumps(value, default=_json_default, option=_DUMPS).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_plain(value), default=_json_default, option=_DUMPS).decode()


def _plain(value: Any) -> Any:
    """``value`` with integers orjson cannot write as text (they are never FHIR numbers)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return value


def loads_mapping(value: Any) -> dict[str, Any]:
    """A JSON object column (text, or already decoded by the driver) as a dict."""
    decoded = ResourceVersion.parse_json(value) if isinstance(value, str | bytes) else value
    return dict(decoded) if isinstance(decoded, Mapping) else {}


@lru_cache(maxsize=16384)
def relative_reference(reference: str) -> str:
    """``Type/id`` from a relative, absolute or versioned reference; anything else unchanged.

    ``https://ehr.example/fhir/Patient/7/_history/2`` and ``Patient/7`` both give ``Patient/7``;
    ``urn:uuid:...`` and ``#contained`` stay as they are. Cached: a patient's reference
    recurs in every version about them.
    """
    text = reference.strip()
    match = _REFERENCE.search(text)
    return f"{match[1]}/{match[2]}" if match else text


#: Where each resource type names its patient (the first that holds a reference wins).
_PATIENT_FIELDS = ("subject", "patient", "for", "beneficiary", "individual")


def patient_key(version: ResourceVersion) -> str:
    """``Patient/id`` of the patient a version is about: the Patient itself, else the first
    of ``subject``, ``patient``, ``for``, ... that holds a reference; else the version's own
    reference (a resource about no patient is a lane of its own)."""
    if version.resource_type == "Patient":
        return version.reference
    resource = version.resource
    for name in _PATIENT_FIELDS:
        value = resource.get(name)
        if isinstance(value, Mapping):
            reference = value.get("reference")
            if isinstance(reference, str) and reference.strip():
                return relative_reference(reference)
    return version.reference


def reference_lane_key(reference: str) -> int:
    """A patient's lane key: the CRC-32 of its ``Patient/id``; its lane among ``n`` is
    ``key % n``. The one definition the journal's columns, the workers' lane leases and the
    pipeline's lanes share (see :mod:`fhirbridge.store.lanes`)."""
    return zlib.crc32(relative_reference(reference).encode())


def lane_key(version: ResourceVersion) -> int:
    """The lane key of a version's patient (:func:`patient_key`)."""
    return reference_lane_key(patient_key(version))


def outbox_lane_key(item: OutboxItem) -> int:
    """The lane key of an outbox item: its planning transition's patient (else its key)."""
    transition = item.payload.get("transition")
    patient = transition.get("patient") if isinstance(transition, Mapping) else None
    return reference_lane_key(patient if isinstance(patient, str) and patient else item.key)


def version_params(version: ResourceVersion, now: datetime | str) -> dict[str, Any]:
    """The bound parameters that identify and hold one resource version."""
    return {
        "lane_key": lane_key(version),
        "server": version.server,
        "resource_type": version.resource_type,
        "resource_id": version.id,
        "version_id": version.version_id,
        "last_updated": version.last_updated,
        "raw": version.raw,
        "now": now,
    }


def version_from_row(row: tuple[Any, ...] | Any) -> ResourceVersion:
    """Rebuild a version from ``server, resource_type, resource_id, version_id, last_updated,
    raw`` (the stored columns win over what the raw JSON says)."""
    server, resource_type, resource_id, version_id, last_updated, raw = row
    raw = bytes(raw)
    return ResourceVersion(
        server=server,
        resource_type=resource_type,
        id=resource_id,
        version_id=version_id,
        last_updated=last_updated,
        raw=raw,
        resource=lazy_resource(raw),
    )


def rejected_letter(version: ResourceVersion, reason: str) -> dict[str, Any]:
    """The dead letter of a rejected version: ``source``, ``reference``, ``reason``, ``payload``.

    Its source is :data:`REJECTED_SOURCE`, its reference ``server|Type/id/_history/vid`` and
    its payload the raw bytes.
    """
    return {
        "source": REJECTED_SOURCE,
        "reference": DeadLetter.rejected_reference(version),
        "reason": reason,
        "payload": version.raw,
    }


def _code(klass: Any) -> str:
    """``class.code`` of an R4 Coding, or of the first coding of an R5 CodeableConcept list."""
    if isinstance(klass, list):
        klass = klass[0] if klass else None
        if isinstance(klass, Mapping):
            codings = klass.get("coding") or [{}]
            klass = codings[0] if isinstance(codings, list) and codings else {}
    if isinstance(klass, Mapping):
        code = klass.get("code")
        return code if isinstance(code, str) else ""
    return ""


class _IndexMembers(msgspec.Struct, gc=False, rename={"class_": "class"}):
    """The members of an Encounter that its ``encounter_index`` row reads."""

    subject: Any = None
    period: Any = None
    status: Any = None
    class_: Any = None


_INDEX_MEMBERS = msgspec.json.Decoder(_IndexMembers)


def _index_members(version: ResourceVersion) -> Mapping[str, Any]:
    """What :func:`encounter_row` reads: decoded from the raw bytes alone when the resource
    has not been parsed (the rest of it is skipped), else the parsed resource."""
    resource = version.resource
    if isinstance(resource, LazyResource) and not resource.parsed:
        found = narrow_decode(_INDEX_MEMBERS, version.raw)
        if found is None:
            return resource
        return {
            "subject": found.subject,
            "period": found.period,
            "status": found.status,
            "class": found.class_,
        }
    return resource


def encounter_row(version: ResourceVersion) -> dict[str, Any] | None:
    """The ``encounter_index`` row of an Encounter snapshot; None when it names no subject.

    Times are aware UTC datetimes (or None); the SQLite store writes them with :func:`iso`.
    """
    resource = _index_members(version)
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, Mapping) else None
    if not isinstance(reference, str) or not reference.strip():
        return None
    period = resource.get("period")
    period = period if isinstance(period, Mapping) else {}
    start = parse_instant(period.get("start") if isinstance(period.get("start"), str) else None)
    end = parse_instant(period.get("end") if isinstance(period.get("end"), str) else None)
    status = resource.get("status")
    return {
        "server": version.server,
        "encounter": f"Encounter/{version.id}",
        "patient": relative_reference(reference),
        "encounter_class": _code(resource.get("class")),
        "status": status if isinstance(status, str) else "",
        "start_at": utc(start) if start else None,
        "end_at": utc(end) if end else None,
    }


def stay_from_row(row: tuple[Any, ...] | Any) -> Stay:
    """A :class:`Stay` from ``server, encounter, patient, class, status, start_at, end_at``."""
    server, encounter, patient, encounter_class, status, start, end = row
    return Stay(
        server=server,
        encounter=encounter,
        patient=patient,
        encounter_class=encounter_class,
        status=status,
        start=_moment(start),
        end=_moment(end),
    )


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    return from_iso(value) if isinstance(value, str) else utc(value)


def transition_body(transition: Transition) -> str:
    """The transition as JSON text. ``occurred_at`` keeps its own offset (local dates matter)."""
    return dumps(
        {
            "kind": transition.kind.value,
            "patient": transition.patient,
            "focus": transition.focus,
            "occurred_at": transition.occurred_at.isoformat(),
            "encounter": transition.encounter,
            "focus_version": transition.focus_version,
            "discriminator": transition.discriminator,
            "server": transition.server,
            "facts": dict(transition.facts),
        }
    )


def transition_rows(
    transitions: Iterable[Transition], notes: Mapping[str, str] | None, now: datetime | str
) -> list[dict[str, Any]]:
    """The ``transition`` rows of a completed version: ``key, kind, detected_at, note, body``.

    ``notes`` maps a transition key to its note (none is ``""``); ``now`` is the detection time
    as the store binds it.
    """
    notes = notes or {}
    return [
        {
            "key": t.key,
            "kind": t.kind.value,
            "detected_at": now,
            "note": notes.get(t.key, ""),
            "body": transition_body(t),
        }
        for t in transitions
    ]


def transition_from_body(body: Any) -> Transition:
    """Read what :func:`transition_body` wrote (text, or a dict from a JSONB column)."""
    data = loads_mapping(body)
    return Transition(
        kind=TransitionKind(data["kind"]),
        patient=data["patient"],
        focus=data["focus"],
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        encounter=data.get("encounter"),
        focus_version=data.get("focus_version", ""),
        discriminator=data.get("discriminator", ""),
        server=data.get("server", ""),
        facts=data.get("facts") or {},
    )


def stored_transition_from_row(row: tuple[Any, ...] | Any) -> StoredTransition:
    """A :class:`StoredTransition` from ``key, detected_at, note, body``."""
    key, detected_at, note, body = row
    detected = from_iso(detected_at) if isinstance(detected_at, str) else utc(detected_at)
    return StoredTransition(
        key=key, transition=transition_from_body(body), detected_at=detected, note=note
    )


def outbox_from_row(row: tuple[Any, ...] | Any) -> OutboxItem:
    """An :class:`OutboxItem` from ``id, key, kind, payload, state, attempts, last_error,
    result``."""
    item_id, key, kind, payload, state, attempts, last_error, result = row
    return OutboxItem(
        key=key,
        kind=kind,
        payload=loads_mapping(payload),
        id=int(item_id),
        state=state,
        attempts=int(attempts),
        last_error=last_error,
        result=loads_mapping(result),
    )


def outbox_letter(item: OutboxItem, error: str) -> dict[str, Any]:
    """The dead letter of an outbox item that failed for good: ``source``, ``reference``,
    ``reason``, ``payload``.

    Its source is :data:`OUTBOX_SOURCE`, its reference the item's key and its payload the
    item's payload as JSON bytes.
    """
    return {
        "source": OUTBOX_SOURCE,
        "reference": item.key,
        "reason": error,
        "payload": dumps(dict(item.payload)).encode(),
    }


def dead_letter_from_row(row: tuple[Any, ...] | Any) -> DeadLetter:
    """A :class:`DeadLetter` from ``id, source, reference, reason, payload, created_at,
    replayed``."""
    letter_id, source, reference, reason, payload, created_at, replayed = row
    created = from_iso(created_at) if isinstance(created_at, str) else utc(created_at)
    return DeadLetter(
        id=int(letter_id),
        source=source,
        reference=reference,
        reason=reason,
        payload=bytes(payload),
        created_at=created,
        replayed=bool(replayed),
    )


def audit_from_row(row: tuple[Any, ...] | Any) -> dict[str, Any]:
    """An audit record: ``{"id", "at", "action", "reference", "detail"}``."""
    record_id, at, action, reference, detail = row
    return {
        "id": int(record_id),
        "at": from_iso(at) if isinstance(at, str) else utc(at),
        "action": action,
        "reference": reference,
        "detail": loads_mapping(detail),
    }
