"""Social needs (SDOH risks) read from Condition and Observation versions (pure).

The codes live in ``mappings/sdoh.yaml`` (Gravity Project SDOH Clinical Care IG categories,
LOINC screening questions with their positive answers, SNOMED CT / ICD-10-CM conditions);
:class:`SdohTable` loads them and answers which need, if any, a resource records.

``detect_social_need`` gives ``social-need`` when a Condition becomes an active SDOH concern,
or an Observation becomes a final positive screening answer. Its facts carry ``need`` (the
need's id, e.g. ``food-insecurity``), ``source`` (``condition`` or ``screening``) and
``code``; whether the patient has an open transitional-care CarePlan, and whether the need
is already referred, are looked up when planning (:mod:`fhirbridge.casemgmt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fhirbridge._shipped import mappings_dir
from fhirbridge._yaml import read_yaml, validation_error
from fhirbridge.detect.projection import local_reference
from fhirbridge.values import Transition, TransitionKind, is_engine_resource, parse_instant

__all__ = ["SdohNeed", "SdohTable", "default_sdoh_table", "detect_social_need"]

_FILE = "sdoh.yaml"
_FINAL = frozenset({"final", "amended", "corrected"})
_NOT_A_CONCERN = frozenset({"refuted", "entered-in-error"})
_INACTIVE = frozenset({"inactive", "resolved", "remission"})

Coding = tuple[str, str]


class _Coding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str
    code: str


class _Need(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    display: str = Field(min_length=1)
    categories: tuple[_Coding, ...] = Field(min_length=1)
    conditions: tuple[_Coding, ...] = ()
    questions: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    referral: str = Field(min_length=1)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    sdoh_categories: tuple[_Coding, ...] = ()
    needs: dict[str, _Need] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class SdohNeed:
    """One social need: its SDOH categories, condition codes and screening questions."""

    id: str
    display: str
    categories: tuple[Coding, ...]
    conditions: frozenset[Coding]
    questions: Mapping[str, frozenset[str]]
    referral: str


@dataclass(frozen=True, slots=True)
class SdohTable:
    """Which need a Condition or an Observation records (see ``mappings/sdoh.yaml``)."""

    needs: tuple[SdohNeed, ...] = ()
    general: frozenset[Coding] = field(default_factory=frozenset)

    @classmethod
    def load(cls, path: Path | None = None) -> SdohTable:
        """Read a table file (default: the shipped ``mappings/sdoh.yaml``)."""
        doc = read_yaml(path or mappings_dir() / _FILE)
        try:
            model = _File.model_validate(doc.data)
        except ValidationError as exc:
            raise validation_error(doc, exc) from exc
        needs = tuple(
            SdohNeed(
                id=name,
                display=need.display,
                categories=tuple((c.system, c.code) for c in need.categories),
                conditions=frozenset((c.system, c.code) for c in need.conditions),
                questions={q: frozenset(a) for q, a in need.questions.items()},
                referral=need.referral,
            )
            for name, need in model.needs.items()
        )
        return cls(
            needs=needs, general=frozenset((c.system, c.code) for c in model.sdoh_categories)
        )

    def need(self, need_id: str) -> SdohNeed | None:
        """The need with this id, if the table has it."""
        return next((n for n in self.needs if n.id == need_id), None)

    def _by_category(self, codings: set[Coding]) -> SdohNeed | None:
        return next((n for n in self.needs if codings & set(n.categories)), None)

    def condition_need(self, condition: Mapping[str, Any]) -> SdohNeed | None:
        """The need an SDOH Condition records (None: not an SDOH Condition we know)."""
        categories = _codings(condition.get("category"))
        found = self._by_category(categories)
        if found is not None:
            return found
        if not categories & self.general:
            return None
        codes = _codings(condition.get("code"))
        return next((n for n in self.needs if codes & n.conditions), None)

    def screening_need(self, observation: Mapping[str, Any]) -> SdohNeed | None:
        """The need a positive screening answer records (None: not positive, or not SDOH)."""
        categories = _codings(observation.get("category"))
        if not categories:
            return None
        sdoh = bool(categories & self.general) or self._by_category(categories) is not None
        if not sdoh:
            return None
        questions = {c for s, c in _codings(observation.get("code")) if s == LOINC}
        answers = {c for s, c in _codings(observation.get("valueCodeableConcept")) if s == LOINC}
        for need in self.needs:
            for question in questions:
                if answers & need.questions.get(question, frozenset()):
                    return need
        return None


LOINC = "http://loinc.org"


@cache
def default_sdoh_table() -> SdohTable:
    """The shipped table, read once."""
    return SdohTable.load()


def _codings(value: Any) -> set[Coding]:
    concepts = value if isinstance(value, list) else [value]
    found: set[Coding] = set()
    for concept in concepts:
        if not isinstance(concept, Mapping):
            continue
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and coding.get("code"):
                found.add((str(coding.get("system") or ""), str(coding["code"])))
    return found


def _status(concept: Any) -> str | None:
    codes = sorted(c for _, c in _codings(concept))
    return codes[0] if codes else None


def _is_concern(condition: Mapping[str, Any] | None) -> bool:
    if condition is None:
        return False
    if _status(condition.get("verificationStatus")) in _NOT_A_CONCERN:
        return False
    return _status(condition.get("clinicalStatus")) not in _INACTIVE


def _is_positive(observation: Mapping[str, Any] | None, table: SdohTable) -> bool:
    if observation is None or observation.get("status") not in _FINAL:
        return False
    return table.screening_need(observation) is not None


def detect_social_need(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    server: str = "",
    table: SdohTable | None = None,
) -> list[Transition]:
    """``social-need`` when a Condition or Observation newly records an SDOH risk."""
    if is_engine_resource(after):
        return []
    sdoh = table or default_sdoh_table()
    kind = after.get("resourceType")
    if kind == "Condition":
        need = sdoh.condition_need(after)
        if need is None or not _is_concern(after) or _is_concern(before):
            return []
        source = "condition"
        when = parse_instant(after.get("recordedDate")) or parse_instant(
            after.get("onsetDateTime") or (after.get("onsetPeriod") or {}).get("start")
        )
        codes = _codings(after.get("code"))
    elif kind == "Observation":
        need = sdoh.screening_need(after)
        if need is None or not _is_positive(after, sdoh) or _is_positive(before, sdoh):
            return []
        source = "screening"
        when = parse_instant(after.get("effectiveDateTime") or after.get("issued"))
        codes = _codings(after.get("code"))
    else:
        return []
    patient = local_reference(after.get("subject"))
    if patient is None or not patient.startswith("Patient/"):
        return []
    meta = after.get("meta") or {}
    occurred = when or parse_instant(meta.get("lastUpdated")) or datetime.now(UTC)
    focus = f"{kind}/{after.get('id')}"
    return [
        Transition(
            kind=TransitionKind.SOCIAL_NEED,
            patient=patient,
            focus=focus,
            occurred_at=occurred,
            encounter=local_reference(after.get("encounter")),
            focus_version=str(meta.get("versionId") or ""),
            server=server,
            facts={
                "need": need.id,
                "need_display": need.display,
                "need_categories": [[s, c] for s, c in need.categories],
                "referral": need.referral,
                "source": source,
                "codes": sorted(f"{s}|{c}" for s, c in codes),
            },
        )
    ]
