"""The Charlson comorbidity score of a patient's Conditions, in either weight table.

How a Condition finds its categories (``mappings/charlson-icd10.yaml`` and
``mappings/charlson-snomed.yaml``):

1. An ICD-10(-CM) coding decides when there is one: Quan's prefixes, nothing else.
2. Otherwise the SNOMED CT (or local) codes listed with their ICD-10-CM targets.
3. Otherwise the fallback terms, searched in ``code.text`` and the displays of the SNOMED CT
   codings (a local code's display is not guessed at).
4. Otherwise the Condition is *unrecognised*: its codings are reported, never silently dropped.

Which Conditions count for an index stay is judged on the stay's own dates
(:func:`active_during`), not on the Condition's status today.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, tzinfo
from typing import Any, Literal

from fhirbridge._fhirjson import codings, local_date, resource_key, status_code
from fhirbridge.risk.codes import WEIGHT_TABLES, CharlsonTable, charlson_table

__all__ = [
    "CharlsonDetail",
    "ConditionMatch",
    "Unrecognised",
    "active_during",
    "charlson",
    "charlson_detail",
    "classify_condition",
    "condition_counts",
]

WeightTable = Literal["charlson", "lace"]

#: Condition.clinicalStatus codes that count (no status at all counts too).
ACTIVE_CLINICAL_STATUS = frozenset({"active", "recurrence", "relapse"})
#: Condition.verificationStatus codes that never count.
EXCLUDED_VERIFICATION_STATUS = frozenset({"entered-in-error", "refuted"})

#: How a Condition's categories were found (``ConditionMatch.by``).
BY_ICD10 = "icd10"
BY_CODE = "code"
BY_TEXT = "text"


def _refuted(condition: Mapping[str, Any]) -> bool:
    return status_code(condition.get("verificationStatus")) in EXCLUDED_VERIFICATION_STATUS


def condition_counts(condition: Mapping[str, Any]) -> bool:
    """True when a Condition is a current diagnosis (today's status).

    Its clinicalStatus is active, recurrence or relapse, or absent; its verificationStatus is
    neither entered-in-error nor refuted.
    """
    clinical = status_code(condition.get("clinicalStatus"))
    if clinical is not None and clinical not in ACTIVE_CLINICAL_STATUS:
        return False
    return not _refuted(condition)


def _first_date(condition: Mapping[str, Any], names: tuple[str, ...], tz: tzinfo) -> date | None:
    for name in names:
        value = condition.get(name)
        if name.endswith("Period"):
            value = value.get("start") if isinstance(value, Mapping) else None
        day = local_date(value, tz)
        if day is not None:
            return day
    return None


def active_during(
    condition: Mapping[str, Any], start: date | None, end: date | None, tz: tzinfo
) -> bool:
    """True when a Condition was a diagnosis of the stay from ``start`` to ``end`` (local dates).

    - never when refuted or entered in error;
    - it began (onset, else recordedDate) no later than the discharge date: a diagnosis made
      during the stay counts, one first recorded after it was not known then;
    - it had not abated before the admission date (``abatementDateTime`` or
      ``abatementPeriod.start``), whatever its clinicalStatus says today: a condition resolved
      after an old stay still counts for that stay;
    - with no abatement date, a clinicalStatus of inactive, remission or resolved (or
      ``abatementBoolean`` true) cannot be placed in time, and today's status decides.

    Without stay dates (``None``) the corresponding bound is not checked.
    """
    if _refuted(condition):
        return False
    began = _first_date(condition, ("onsetDateTime", "onsetPeriod", "recordedDate"), tz)
    if began is not None and end is not None and began > end:
        return False
    abated = _first_date(condition, ("abatementDateTime", "abatementPeriod"), tz)
    if abated is not None:
        return start is None or abated >= start
    if condition.get("abatementBoolean") is True:
        return False
    return condition_counts(condition)


@dataclass(frozen=True, slots=True)
class Unrecognised:
    """A Condition coding that no table recognised (``code`` is None for a text-only code)."""

    condition: str | None
    system: str | None
    code: str | None
    display: str | None

    def as_dict(self) -> dict[str, str | None]:
        """A JSON-ready view."""
        return {
            "condition": self.condition,
            "system": self.system,
            "code": self.code,
            "display": self.display,
        }


@dataclass(frozen=True, slots=True)
class ConditionMatch:
    """The categories of one Condition (before the hierarchy) and how they were found.

    ``by`` is ``"icd10"``, ``"code"`` (a listed SNOMED CT or local code), ``"text"`` (the
    fallback terms) or None when nothing recognised the Condition; ``unrecognised`` then lists
    its codings.
    """

    categories: tuple[str, ...]
    by: str | None
    unrecognised: tuple[Unrecognised, ...] = ()


def _system(coding: Mapping[str, Any]) -> str | None:
    system = coding.get("system")
    return system if isinstance(system, str) and system else None


def _fallback_texts(code: Any, coded: list[Mapping[str, Any]], table: CharlsonTable) -> list[str]:
    """What the fallback terms search: ``code.text`` and the displays of the SNOMED CT codings
    (or codings without a system). A local code's display is not guessed at: the code is
    reported so that it can be listed under ``local``."""
    found = []
    if isinstance(code, Mapping) and isinstance(code.get("text"), str):
        found.append(code["text"])
    for coding in coded:
        display = coding.get("display")
        if (_system(coding) is None or table.is_snomed(_system(coding))) and isinstance(
            display, str
        ):
            found.append(display)
    return found


def classify_condition(
    condition: Mapping[str, Any], table: CharlsonTable | None = None
) -> ConditionMatch:
    """The Charlson categories of one Condition's code (see the module docstring)."""
    table = table or charlson_table()
    key = resource_key(condition)
    code = condition.get("code")
    coded = [c for c in codings(code) if c.get("code") is not None]
    icd = [c for c in coded if _system(c) in table.icd10_systems]
    if icd:
        found = {k for c in icd for k in table.icd10_categories(str(c["code"]))}
        return ConditionMatch(_ordered(table, found), BY_ICD10)
    known = [table.concept(_system(c), str(c["code"])) for c in coded]
    listed = [concept for concept in known if concept is not None]
    if listed:
        found = {k for concept in listed for k in concept.categories}
        return ConditionMatch(_ordered(table, found), BY_CODE)
    found = {
        k for text in _fallback_texts(code, coded, table) for k in table.categories_of_text(text)
    }
    if found:
        return ConditionMatch(_ordered(table, found), BY_TEXT)
    missing = [
        Unrecognised(
            condition=key,
            system=_system(c),
            code=str(c["code"]),
            display=c.get("display") if isinstance(c.get("display"), str) else None,
        )
        for c in coded
    ]
    if not missing:
        text = code.get("text") if isinstance(code, Mapping) else None
        if isinstance(text, str) and text:
            missing.append(Unrecognised(condition=key, system=None, code=None, display=text))
    return ConditionMatch((), None, tuple(missing))


def _ordered(table: CharlsonTable, keys: set[str]) -> tuple[str, ...]:
    return tuple(c.key for c in table.categories if c.key in keys)


@dataclass(frozen=True, slots=True)
class CharlsonDetail:
    """Points, the categories counted (after the hierarchy) and the Conditions behind them.

    ``unrecognised`` lists the codings of the Conditions no table recognised; ``by_text`` the
    Conditions recognised only by the fallback terms; ``weights`` the weight of every category
    in the table used.
    """

    points: int
    categories: tuple[str, ...]
    sources: tuple[str, ...]
    unrecognised: tuple[Unrecognised, ...] = ()
    by_text: tuple[str, ...] = ()
    weights: Mapping[str, int] | None = None


def charlson_detail(
    conditions: Iterable[Mapping[str, Any]],
    *,
    weights: WeightTable = "charlson",
    age: int | None = None,
    current: bool = True,
) -> CharlsonDetail:
    """Like :func:`charlson`, with the Conditions behind the points and the ones not recognised.

    ``current`` (the default) skips Conditions that are not current diagnoses today
    (:func:`condition_counts`); a caller that has already chosen the Conditions of a stay with
    :func:`active_during` passes ``current=False``.
    """
    if weights not in WEIGHT_TABLES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_TABLES)}, not {weights!r}")
    table = charlson_table()
    sources: dict[str, list[str]] = {}
    unrecognised: list[Unrecognised] = []
    by_text: list[str] = []
    for condition in conditions:
        if current and not condition_counts(condition):
            continue
        key = resource_key(condition)
        match = classify_condition(condition, table)
        unrecognised.extend(match.unrecognised)
        if match.by == BY_TEXT and key and key not in by_text:
            by_text.append(key)
        for category in match.categories:
            found = sources.setdefault(category, [])
            if key and key not in found:
                found.append(key)
    counted = table.apply_hierarchy(set(sources))
    points = sum(table.category(c).weights[weights] for c in counted)
    if age is not None:
        points += table.points_for_age(age)
    refs = dict.fromkeys(ref for c in counted for ref in sources[c])
    return CharlsonDetail(
        points=points,
        categories=counted,
        sources=tuple(refs),
        unrecognised=tuple(dict.fromkeys(unrecognised)),
        by_text=tuple(by_text),
        weights={c.key: c.weights[weights] for c in table.categories},
    )


def charlson(
    conditions: Iterable[Mapping[str, Any]],
    *,
    weights: WeightTable = "charlson",
    age: int | None = None,
) -> tuple[int, tuple[str, ...]]:
    """The Charlson score of FHIR Condition dicts and the categories that were counted.

    Each category counts once, whatever the number of Conditions in it; when both a category
    and one it supersedes are present only the higher counts (moderate/severe over mild liver
    disease, diabetes with end-organ damage over uncomplicated, metastatic over any tumour).
    ``weights`` picks the table: ``"charlson"`` (Charlson 1987) or ``"lace"`` (LACE's own
    weights). ``age`` adds the original index's age points (50-59: 1 ... 80+: 4).

    Conditions are read by ICD-10(-CM) prefix, else by listed SNOMED CT or local code, else by
    the fallback terms (see the module docstring); only current diagnoses count (see
    :func:`condition_counts`). Categories come back in table order: mi, chf, pvd, cvd,
    dementia, chronic-pulmonary, connective-tissue, peptic-ulcer, mild-liver, diabetes,
    diabetes-complicated, hemiplegia, renal, malignancy, severe-liver, metastatic, hiv.
    """
    detail = charlson_detail(conditions, weights=weights, age=age)
    return detail.points, detail.categories
