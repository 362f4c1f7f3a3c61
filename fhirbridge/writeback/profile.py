"""Check outgoing resources against the engine's profiles before they leave.

The StructureDefinitions in ``profiles/`` constrain what the engine writes. This checker
reads their differentials and enforces what matters on the wire: minimum cardinality,
fixed and pattern values, and required bindings (to the few core value sets the engine
uses and to the engine's own task codes). It is not a general FHIR validator; structural
validity is ``fhir.resources``' job, done first.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fhirbridge._shipped import shipped_dir
from fhirbridge.errors import ProfileError

__all__ = ["Profile", "check", "load_profile", "profiles_dir"]

CORE_CODES: dict[str, frozenset[str]] = {
    "http://hl7.org/fhir/ValueSet/task-status": frozenset(
        [
            "draft",
            "requested",
            "received",
            "accepted",
            "rejected",
            "ready",
            "cancelled",
            "in-progress",
            "on-hold",
            "failed",
            "completed",
            "entered-in-error",
        ]
    ),
    "http://hl7.org/fhir/ValueSet/request-priority": frozenset(
        {"routine", "urgent", "asap", "stat"}
    ),
    "http://hl7.org/fhir/ValueSet/request-status": frozenset(
        ["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]
    ),
}


def profiles_dir() -> Path:
    """Where the shipped profiles live (source checkout or installed package)."""
    return shipped_dir("profiles")


@dataclass(frozen=True, slots=True)
class Profile:
    """A profile's checkable constraints."""

    url: str
    type: str
    elements: tuple[Mapping[str, Any], ...]


@cache
def load_profile(name: str) -> Profile:
    """Load ``profiles/StructureDefinition-<name>.json``."""
    path = profiles_dir() / f"StructureDefinition-{name}.json"
    data = json.loads(path.read_text())
    return Profile(
        url=data["url"], type=data["type"], elements=tuple(data["differential"]["element"])
    )


@cache
def _code_system(url: str) -> frozenset[str]:
    for path in profiles_dir().glob("CodeSystem-*.json"):
        data = json.loads(path.read_text())
        if data.get("url") == url:
            return frozenset(c["code"] for c in data.get("concept") or ())
    return frozenset()


def _values(node: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return node if isinstance(node, list) else [node]
    items = node if isinstance(node, list) else [node]
    found: list[Any] = []
    for item in items:
        if isinstance(item, Mapping) and parts[0] in item:
            found.extend(_values(item[parts[0]], parts[1:]))
    return found


def _matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern appears in the value."""
    if isinstance(pattern, Mapping):
        return isinstance(value, Mapping) and all(
            key in value and _matches(value[key], sub) for key, sub in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def _codes(value: Any) -> Iterable[tuple[str | None, str]]:
    if isinstance(value, str):
        yield None, value
    elif isinstance(value, Mapping):
        for coding in value.get("coding") or [value]:
            if isinstance(coding, Mapping) and "code" in coding:
                yield coding.get("system"), str(coding["code"])


def check(
    resource: Mapping[str, Any], profile: Profile, *, extra_codes: Collection[str] = ()
) -> list[str]:
    """Problems of ``resource`` against ``profile`` (an empty list when it conforms)."""
    problems: list[str] = []
    if resource.get("resourceType") != profile.type:
        return [f"expected a {profile.type}, got {resource.get('resourceType')}"]
    for element in profile.elements:
        path = element["path"]
        values = _values(resource, path.split(".")[1:])
        if len(values) < int(element.get("min", 0)):
            problems.append(f"{path}: at least {element['min']} required, found {len(values)}")
            continue
        for key, expected in element.items():
            if key.startswith("fixed") and any(v != expected for v in values):
                problems.append(f"{path}: must be {expected!r}")
            if key.startswith("pattern") and not any(_matches(v, expected) for v in values):
                problems.append(f"{path}: must include {json.dumps(expected)}")
        binding = element.get("binding") or {}
        if binding.get("strength") == "required":
            value_set = str(binding["valueSet"]).split("|")[0]
            if value_set in CORE_CODES:
                allowed: Collection[str] = CORE_CODES[value_set]
                system_ok: str | None = None
            else:
                system_ok = value_set.replace("/ValueSet/", "/CodeSystem/")
                allowed = _code_system(system_ok) | frozenset(extra_codes)
            for value in values:
                # a CodeableConcept conforms when one of its codings is in the value set
                pairs = list(_codes(value))
                if any((not system_ok or s == system_ok) and c in allowed for s, c in pairs):
                    continue
                shown = ", ".join(f"{s}|{c}" if s else c for s, c in pairs) or "nothing"
                problems.append(f"{path}: {shown} is not in {value_set}")
    return problems


def ensure(
    resource: Mapping[str, Any], profile_name: str, *, extra_codes: Collection[str] = ()
) -> None:
    """Raise :class:`ProfileError` unless ``resource`` conforms to the named profile."""
    problems = check(resource, load_profile(profile_name), extra_codes=extra_codes)
    if problems:
        raise ProfileError(
            f"{resource.get('resourceType')} does not conform to {profile_name}: "
            + "; ".join(problems)
        )
