"""The code tables behind the risk scores, loaded from ``mappings/`` and cached.

``charlson-icd10.yaml`` holds the Charlson categories (ICD-10 prefixes after Quan 2005), their
weights in the original Charlson table and in LACE's table, and the hierarchy between
categories. ``charlson-snomed.yaml`` holds the SNOMED CT side: concepts with their ICD-10-CM
targets (so a concept lands where Quan's prefixes put its target), local codes, and the
documented term fallback for concepts the list does not name. ``risk-inputs.yaml`` holds what
LACE and HOSPITAL look for in Encounters and Observations: classes, acuity signals, laboratory
codes and units, oncology services. All are data that integration engineers may edit; a file
that does not validate raises :class:`~fhirbridge.errors.ConfigError` naming the file and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from fhirbridge._shipped import mappings_dir
from fhirbridge._yaml import read_yaml
from fhirbridge.errors import ConfigError, RuleError

__all__ = [
    "CHARLSON_FILE",
    "CHARLSON_SNOMED_FILE",
    "CodedConcept",
    "RISK_INPUTS_FILE",
    "WEIGHT_TABLES",
    "CharlsonCategory",
    "CharlsonTable",
    "LabTable",
    "RiskInputs",
    "charlson_table",
    "mappings_dir",
    "normalise_icd10",
    "risk_inputs",
]

CHARLSON_FILE = "charlson-icd10.yaml"
CHARLSON_SNOMED_FILE = "charlson-snomed.yaml"
RISK_INPUTS_FILE = "risk-inputs.yaml"

#: The weight tables every category must give: original Charlson, and LACE's own.
WEIGHT_TABLES = ("charlson", "lace")

_RANGE = re.compile(r"([A-Z]+)(\d+)")
#: A SNOMED CT fully specified name's semantic tag at the end of a display.
_SEMANTIC_TAG = re.compile(
    r"\s*\((disorder|finding|situation|morphologic abnormality|clinical finding|event)\)\s*$",
    re.IGNORECASE,
)


def normalise_icd10(code: str) -> str:
    """Upper case without dots or spaces: ``"e11.65"`` -> ``"E1165"``."""
    return re.sub(r"[\s.]", "", code).upper()


@dataclass(frozen=True, slots=True)
class CharlsonCategory:
    """One Charlson category: its codes and its weight in each table."""

    key: str
    label: str
    weights: Mapping[str, int] = field(hash=False)
    icd10_prefixes: tuple[str, ...]
    snomed: frozenset[str] = frozenset()

    def matches_icd10(self, code: str) -> bool:
        """True when the (dotted or undotted) ICD-10 code starts with one of the prefixes."""
        norm = normalise_icd10(code)
        return any(norm.startswith(prefix) for prefix in self.icd10_prefixes)


@dataclass(frozen=True, slots=True)
class CodedConcept:
    """A listed SNOMED CT or local code: its categories (possibly none) and where they came from.

    ``target`` is the ICD-10-CM code the concept maps to; ``categories`` are those its target
    falls in, or the one ``category:`` names in the file.
    """

    system: str
    code: str
    display: str | None
    target: str | None
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CharlsonTable:
    """All Charlson categories, the systems they are coded in, hierarchy and age points.

    ``concepts`` holds the listed SNOMED CT and local codes by ``(system, code)``; ``terms``
    the fallback regular expressions per category, ruled out by ``exclude_terms`` (any
    category) and ``exclude_category_terms`` (that category).
    """

    categories: tuple[CharlsonCategory, ...]
    icd10_systems: frozenset[str]
    snomed_system: str
    supersedes: Mapping[str, tuple[str, ...]] = field(hash=False)
    age_points: tuple[tuple[int, int | None, int], ...]
    concepts: Mapping[tuple[str, str], CodedConcept] = field(default_factory=dict, hash=False)
    terms: Mapping[str, tuple[re.Pattern[str], ...]] = field(default_factory=dict, hash=False)
    exclude_terms: tuple[re.Pattern[str], ...] = ()
    exclude_category_terms: Mapping[str, tuple[re.Pattern[str], ...]] = field(
        default_factory=dict, hash=False
    )
    snomed_aliases: frozenset[str] = frozenset()

    def category(self, key: str) -> CharlsonCategory:
        """The category with this key (KeyError when there is none)."""
        for category in self.categories:
            if category.key == key:
                return category
        raise KeyError(key)

    def icd10_categories(self, code: str) -> tuple[str, ...]:
        """The keys of the categories whose Quan prefixes an ICD-10 code starts with."""
        return tuple(c.key for c in self.categories if c.matches_icd10(code))

    def categories_of(self, system: str | None, code: str) -> tuple[str, ...]:
        """The keys of the categories one coding belongs to (no hierarchy, no term fallback)."""
        if system in self.icd10_systems:
            return self.icd10_categories(code)
        concept = self.concept(system, code)
        return concept.categories if concept else ()

    def is_snomed(self, system: str | None) -> bool:
        """True for SNOMED CT's URI or one of its aliases (``urn:oid:2.16.840.1.113883.6.96``)."""
        return system == self.snomed_system or system in self.snomed_aliases

    def concept(self, system: str | None, code: str) -> CodedConcept | None:
        """The listed SNOMED CT or local concept, or None (a code without system is SNOMED CT's
        when SNOMED CT lists it)."""
        if system is None or self.is_snomed(system):
            system = self.snomed_system
        return self.concepts.get((system, code))

    def categories_of_text(self, text: str) -> tuple[str, ...]:
        """The categories whose fallback terms match a display or text (table order).

        A trailing SNOMED CT semantic tag ("(disorder)", "(finding)", ...) is dropped first.
        """
        text = _SEMANTIC_TAG.sub("", text or "").strip()
        if not text or any(p.search(text) for p in self.exclude_terms):
            return ()
        found = []
        for category in self.categories:
            patterns = self.terms.get(category.key, ())
            if not any(p.search(text) for p in patterns):
                continue
            if any(p.search(text) for p in self.exclude_category_terms.get(category.key, ())):
                continue
            found.append(category.key)
        return tuple(found)

    def apply_hierarchy(self, keys: set[str]) -> tuple[str, ...]:
        """Drop the categories a present category supersedes; table order."""
        dropped = {low for high in keys for low in self.supersedes.get(high, ())}
        return tuple(c.key for c in self.categories if c.key in keys and c.key not in dropped)

    def points_for_age(self, age: int) -> int:
        """The age points of the original index (0 below the first band)."""
        for low, high, points in self.age_points:
            if age >= low and (high is None or age <= high):
                return points
        return 0


@dataclass(frozen=True, slots=True)
class LabTable:
    """One laboratory input: LOINC codes, the score's unit, threshold and unit factors."""

    name: str
    system: str
    codes: frozenset[str]
    unit: str
    threshold: float
    factors: Mapping[str, float] = field(hash=False)

    def convert(self, value: float, unit: str | None) -> float | None:
        """``value`` in the score's unit, or None when the unit is missing or unknown."""
        if unit is None:
            return None
        factor = self.factors.get(unit)
        if factor is None:
            folded = {k.casefold(): v for k, v in self.factors.items()}
            factor = folded.get(unit.casefold())
        return None if factor is None else value * factor


@dataclass(frozen=True, slots=True)
class RiskInputs:
    """What LACE and HOSPITAL look for in Encounters, Observations and service codes."""

    class_system: str
    emergency_classes: frozenset[str]
    inpatient_classes: frozenset[str]
    void_status: frozenset[str]
    admit_sources: tuple[tuple[str, str], ...]
    priorities: tuple[tuple[str, str], ...]
    ed_link_window: timedelta
    haemoglobin: LabTable
    sodium: LabTable
    oncology_codes: tuple[tuple[str, str], ...]
    oncology_keywords: tuple[str, ...]


class _Reader:
    """Typed access to a parsed YAML file that fails with the file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = read_yaml(path).data
        except RuleError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        self.data: Mapping[str, Any] = data

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {reason}")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "expected a mapping")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, "expected a non-empty list")
        return tuple(str(item) for item in value)

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a non-empty string")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "expected a number")
        return float(value)

    def patterns(self, value: Any, key: str) -> tuple[re.Pattern[str], ...]:
        compiled = []
        for i, item in enumerate(self.strings(value, key)):
            try:
                compiled.append(re.compile(item, re.IGNORECASE))
            except re.error as exc:
                raise self.fail(f"{key}[{i}]", f"not a regular expression: {exc}") from exc
        return tuple(compiled)

    def integer(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "expected an integer")
        return value

    def code_pairs(self, value: Any, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, "expected a non-empty list of {system, code}")
        pairs = []
        for i, item in enumerate(value):
            entry = self.mapping(item, f"{key}[{i}]")
            pairs.append(
                (
                    self.string(entry.get("system"), f"{key}[{i}].system"),
                    self.string(str(entry.get("code", "")), f"{key}[{i}].code"),
                )
            )
        return tuple(pairs)

    def icd10_prefixes(self, value: Any, key: str) -> tuple[str, ...]:
        prefixes: list[str] = []
        for item in self.strings(value, key):
            low, sep, high = item.partition("-")
            if not sep:
                prefixes.append(normalise_icd10(low))
                continue
            a = _RANGE.fullmatch(normalise_icd10(low))
            b = _RANGE.fullmatch(normalise_icd10(high))
            if not a or not b or a[1] != b[1] or len(a[2]) != len(b[2]) or a[2] > b[2]:
                raise self.fail(key, f"{item!r} is not a range like K70.0-K70.3")
            width = len(a[2])
            prefixes.extend(f"{a[1]}{n:0{width}d}" for n in range(int(a[2]), int(b[2]) + 1))
        return tuple(prefixes)


@cache
def charlson_table() -> CharlsonTable:
    """The Charlson categories from ``mappings/charlson-icd10.yaml`` (read once)."""
    r = _Reader(mappings_dir() / CHARLSON_FILE)
    categories = []
    for key, raw in r.mapping(r.data.get("categories"), "categories").items():
        where = f"categories.{key}"
        entry = r.mapping(raw, where)
        weights_raw = r.mapping(entry.get("weights"), f"{where}.weights")
        weights = {
            table: r.integer(weights_raw.get(table), f"{where}.weights.{table}")
            for table in WEIGHT_TABLES
        }
        categories.append(
            CharlsonCategory(
                key=str(key),
                label=r.string(entry.get("label"), f"{where}.label"),
                weights=weights,
                icd10_prefixes=r.icd10_prefixes(entry.get("icd10"), f"{where}.icd10"),
            )
        )
    known = {c.key for c in categories}
    supersedes: dict[str, tuple[str, ...]] = {}
    for high, lows in r.mapping(r.data.get("supersedes") or {}, "supersedes").items():
        names = r.strings(lows, f"supersedes.{high}")
        for name in (str(high), *names):
            if name not in known:
                raise r.fail(f"supersedes.{high}", f"unknown category {name!r}")
        supersedes[str(high)] = names
    bands = []
    for i, raw in enumerate(r.data.get("age_points") or ()):
        band = r.mapping(raw, f"age_points[{i}]")
        upper = band.get("max")
        bands.append(
            (
                r.integer(band.get("min"), f"age_points[{i}].min"),
                None if upper is None else r.integer(upper, f"age_points[{i}].max"),
                r.integer(band.get("points"), f"age_points[{i}].points"),
            )
        )
    table = CharlsonTable(
        categories=tuple(categories),
        icd10_systems=frozenset(r.strings(r.data.get("icd10_systems"), "icd10_systems")),
        snomed_system="",
        supersedes=supersedes,
        age_points=tuple(bands),
    )
    return _with_snomed(table, _Reader(mappings_dir() / CHARLSON_SNOMED_FILE))


def _concept(
    r: _Reader, table: CharlsonTable, system: str, code: str, raw: Any, where: str
) -> CodedConcept:
    """One listed code: its ICD-10-CM target's categories, or the category it names."""
    entry = r.mapping(raw, where)
    target = entry.get("icd10")
    named = entry.get("category")
    if target is None and named is None:
        raise r.fail(where, "give icd10 (the ICD-10-CM target) or category")
    known = {c.key for c in table.categories}
    if named is not None:
        if str(named) not in known:
            raise r.fail(f"{where}.category", f"unknown category {named!r}")
        keys: tuple[str, ...] = (str(named),)
    else:
        keys = table.icd10_categories(r.string(str(target), f"{where}.icd10"))
    display = entry.get("display")
    return CodedConcept(
        system=system,
        code=code,
        display=str(display) if display is not None else None,
        target=None if target is None else str(target),
        categories=keys,
    )


def _with_snomed(table: CharlsonTable, r: _Reader) -> CharlsonTable:
    """``table`` with the concepts, local codes and terms of ``charlson-snomed.yaml``."""
    system = r.string(r.data.get("snomed_system"), "snomed_system")
    raw_aliases = r.data.get("snomed_system_aliases")
    aliases = (
        frozenset(r.strings(raw_aliases, "snomed_system_aliases")) if raw_aliases else frozenset()
    )
    concepts: dict[tuple[str, str], CodedConcept] = {}
    for code, raw in r.mapping(r.data.get("concepts"), "concepts").items():
        concept = _concept(r, table, system, str(code), raw, f"concepts.{code}")
        concepts[(system, concept.code)] = concept
    for i, raw in enumerate(r.data.get("local") or ()):
        where = f"local[{i}]"
        entry = r.mapping(raw, where)
        local_system = r.string(entry.get("system"), f"{where}.system")
        local_code = r.string(str(entry.get("code") or ""), f"{where}.code")
        concepts[(local_system, local_code)] = _concept(
            r, table, local_system, local_code, entry, where
        )
    known = {c.key for c in table.categories}
    terms: dict[str, tuple[re.Pattern[str], ...]] = {}
    for key, patterns in r.mapping(r.data.get("terms") or {}, "terms").items():
        if str(key) not in known:
            raise r.fail(f"terms.{key}", f"unknown category {key!r}")
        terms[str(key)] = r.patterns(patterns, f"terms.{key}")
    excluded: dict[str, tuple[re.Pattern[str], ...]] = {}
    per_category = r.mapping(r.data.get("exclude_category_terms") or {}, "exclude_category_terms")
    for key, patterns in per_category.items():
        if str(key) not in known:
            raise r.fail(f"exclude_category_terms.{key}", f"unknown category {key!r}")
        excluded[str(key)] = r.patterns(patterns, f"exclude_category_terms.{key}")
    raw_excludes = r.data.get("exclude_terms")
    categories = tuple(
        replace(
            c,
            snomed=frozenset(
                code
                for (sys, code), concept in concepts.items()
                if sys == system and c.key in concept.categories
            ),
        )
        for c in table.categories
    )
    return replace(
        table,
        categories=categories,
        snomed_system=system,
        snomed_aliases=aliases,
        concepts=concepts,
        terms=terms,
        exclude_terms=r.patterns(raw_excludes, "exclude_terms") if raw_excludes else (),
        exclude_category_terms=excluded,
    )


def _lab(r: _Reader, lab: Mapping[str, Any], name: str) -> LabTable:
    where = f"laboratory.{name}"
    entry = r.mapping(lab.get(name), where)
    factors = r.mapping(entry.get("factors"), f"{where}.factors")
    return LabTable(
        name=name,
        system=r.string(lab.get("system"), "laboratory.system"),
        codes=frozenset(r.strings(entry.get("codes"), f"{where}.codes")),
        unit=r.string(entry.get("unit"), f"{where}.unit"),
        threshold=r.number(entry.get("threshold"), f"{where}.threshold"),
        factors={str(u): r.number(f, f"{where}.factors.{u}") for u, f in factors.items()},
    )


@cache
def risk_inputs() -> RiskInputs:
    """What the scores look for, from ``mappings/risk-inputs.yaml`` (read once)."""
    r = _Reader(mappings_dir() / RISK_INPUTS_FILE)
    classes = r.mapping(r.data.get("encounter_class"), "encounter_class")
    acuity = r.mapping(r.data.get("acuity"), "acuity")
    lab = r.mapping(r.data.get("laboratory"), "laboratory")
    oncology = r.mapping(r.data.get("oncology"), "oncology")
    hours = r.number(acuity.get("ed_link_window_hours"), "acuity.ed_link_window_hours")
    return RiskInputs(
        class_system=r.string(classes.get("system"), "encounter_class.system"),
        emergency_classes=frozenset(
            r.strings(classes.get("emergency"), "encounter_class.emergency")
        ),
        inpatient_classes=frozenset(
            r.strings(classes.get("inpatient"), "encounter_class.inpatient")
        ),
        void_status=frozenset(
            r.strings(r.data.get("void_encounter_status"), "void_encounter_status")
        ),
        admit_sources=r.code_pairs(acuity.get("admit_source"), "acuity.admit_source"),
        priorities=r.code_pairs(acuity.get("priority"), "acuity.priority"),
        ed_link_window=timedelta(hours=hours),
        haemoglobin=_lab(r, lab, "haemoglobin"),
        sodium=_lab(r, lab, "sodium"),
        oncology_codes=r.code_pairs(oncology.get("codes"), "oncology.codes"),
        oncology_keywords=tuple(
            k.casefold() for k in r.strings(oncology.get("keywords"), "oncology.keywords")
        ),
    )
