"""The Charlson comorbidity score of a patient's Conditions, in either weight table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fhirbridge.risk._fhir import codings, resource_key, status_code
from fhirbridge.risk.codes import WEIGHT_TABLES, charlson_table

__all__ = ["CharlsonDetail", "charlson", "charlson_detail", "condition_counts"]

WeightTable = Literal["charlson", "lace"]

#: Condition.clinicalStatus codes that count (no status at all counts too).
ACTIVE_CLINICAL_STATUS = frozenset({"active", "recurrence", "relapse"})
#: Condition.verificationStatus codes that never count.
EXCLUDED_VERIFICATION_STATUS = frozenset({"entered-in-error", "refuted"})


def condition_counts(condition: Mapping[str, Any]) -> bool:
    """True when a Condition is a current diagnosis.

    Its clinicalStatus is active, recurrence or relapse, or absent; its verificationStatus is
    neither entered-in-error nor refuted.
    """
    clinical = status_code(condition.get("clinicalStatus"))
    if clinical is not None and clinical not in ACTIVE_CLINICAL_STATUS:
        return False
    verification = status_code(condition.get("verificationStatus"))
    return verification not in EXCLUDED_VERIFICATION_STATUS


@dataclass(frozen=True, slots=True)
class CharlsonDetail:
    """Points, the categories counted (after the hierarchy) and the Conditions behind them."""

    points: int
    categories: tuple[str, ...]
    sources: tuple[str, ...]


def charlson_detail(
    conditions: Iterable[Mapping[str, Any]],
    *,
    weights: WeightTable = "charlson",
    age: int | None = None,
) -> CharlsonDetail:
    """Like :func:`charlson`, with the ``Type/id`` of the Conditions that gave points."""
    if weights not in WEIGHT_TABLES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_TABLES)}, not {weights!r}")
    table = charlson_table()
    sources: dict[str, list[str]] = {}
    for condition in conditions:
        if not condition_counts(condition):
            continue
        key = resource_key(condition)
        for coding in codings(condition.get("code")):
            code = coding.get("code")
            if code is None:
                continue
            system = coding.get("system")
            system = system if isinstance(system, str) else None
            for category in table.categories_of(system, str(code)):
                found = sources.setdefault(category, [])
                if key and key not in found:
                    found.append(key)
    counted = table.apply_hierarchy(set(sources))
    points = sum(table.category(c).weights[weights] for c in counted)
    if age is not None:
        points += table.points_for_age(age)
    refs = dict.fromkeys(ref for c in counted for ref in sources[c])
    return CharlsonDetail(points=points, categories=counted, sources=tuple(refs))


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

    Conditions are read by ICD-10(-CM) prefix or SNOMED CT code (``mappings/charlson-icd10.yaml``);
    only current diagnoses count (see :func:`condition_counts`). Categories come back in table
    order: mi, chf, pvd, cvd, dementia, chronic-pulmonary, connective-tissue, peptic-ulcer,
    mild-liver, diabetes, diabetes-complicated, hemiplegia, renal, malignancy, severe-liver,
    metastatic, hiv.
    """
    detail = charlson_detail(conditions, weights=weights, age=age)
    return detail.points, detail.categories
