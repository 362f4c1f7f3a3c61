"""Small readers of plain FHIR R4 JSON: codings, references, times and dates.

The risk scores and the rules read raw resource dicts and facts (never ``fhir.resources``
models): these helpers tolerate missing or malformed elements and return ``None`` or nothing
rather than raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, tzinfo
from typing import Any

from fhirbridge.values import parse_instant

Resource = Mapping[str, Any]


def codings(value: Any) -> Iterator[Mapping[str, Any]]:
    """The codings in a Coding, a CodeableConcept (or R5 CodeableReference), or a list."""
    if isinstance(value, Mapping):
        if "code" in value and "coding" not in value and "concept" not in value:
            yield value
        for coding in value.get("coding") or ():
            if isinstance(coding, Mapping):
                yield coding
        concept = value.get("concept")
        if isinstance(concept, Mapping):
            yield from codings(concept)
    elif isinstance(value, list):
        for item in value:
            yield from codings(item)


def codes(value: Any) -> Iterator[str]:
    """The codes of :func:`codings`, as strings."""
    for coding in codings(value):
        code = coding.get("code")
        if code is not None:
            yield str(code)


def texts(value: Any) -> Iterator[str]:
    """The human text of a CodeableConcept (or list): ``text`` and every coding's ``display``."""
    if isinstance(value, list):
        for item in value:
            yield from texts(item)
        return
    if not isinstance(value, Mapping):
        return
    for key in ("text", "display"):
        text = value.get(key)
        if isinstance(text, str) and text:
            yield text
    for coding in value.get("coding") or ():
        if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
            yield coding["display"]
    concept = value.get("concept")
    if isinstance(concept, Mapping):
        yield from texts(concept)


def has_code(value: Any, wanted: Iterable[tuple[str | None, str]]) -> bool:
    """True when a coding in ``value`` has one of the ``(system, code)`` pairs.

    A coding without a system matches on its code alone, and so does a wanted pair whose
    system is None.
    """
    pairs = tuple(wanted)
    for coding in codings(value):
        code = coding.get("code")
        system = coding.get("system")
        for want_system, want_code in pairs:
            if str(code) != want_code:
                continue
            if system is None or want_system is None or system == want_system:
                return True
    return False


def ref_key(value: Any) -> str | None:
    """``Type/id`` of a Reference dict or reference string (absolute URLs and _history cut)."""
    ref = value.get("reference") if isinstance(value, Mapping) else value
    if not isinstance(ref, str) or not ref or ref.startswith("#"):
        return None
    parts = [p for p in ref.split("?")[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        return None
    return f"{parts[-2]}/{parts[-1]}"


def resource_key(resource: Resource) -> str | None:
    """``Type/id`` of a resource, or None when it has no type or id."""
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if isinstance(rtype, str) and rtype and isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return None


def subject_key(resource: Resource) -> str | None:
    """``Type/id`` of the resource's subject (or ``patient``, as some resources name it)."""
    return ref_key(resource.get("subject")) or ref_key(resource.get("patient"))


def same_subject(resource: Resource, patient: str | None) -> bool:
    """False only when both subjects are known and differ."""
    theirs = subject_key(resource)
    return patient is None or theirs is None or theirs == patient


def instant(value: Any) -> datetime | None:
    """An aware datetime from a FHIR date/dateTime/instant string, else None."""
    return parse_instant(value) if isinstance(value, str) else None


def local_date(value: Any, tz: tzinfo) -> date | None:
    """The calendar date of a FHIR date/dateTime in ``tz``.

    A bare date (``2024-03-01``) is that date wherever the reader is; a dateTime with a time is
    converted to ``tz`` first (``2024-03-01T02:00:00Z`` is 29 February in New York).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            return None
    parsed = parse_instant(text)
    return parsed.astimezone(tz).date() if parsed else None


def period(resource: Resource, key: str = "period") -> tuple[str | None, str | None]:
    """The raw ``start`` and ``end`` strings of a Period element."""
    value = resource.get(key)
    if not isinstance(value, Mapping):
        return None, None
    start, end = value.get("start"), value.get("end")
    return (
        start if isinstance(start, str) else None,
        end if isinstance(end, str) else None,
    )


def status_code(value: Any) -> str | None:
    """A status that is a code (``"final"``) or a CodeableConcept (Condition.clinicalStatus)."""
    if isinstance(value, str):
        return value
    return next(codes(value), None)
