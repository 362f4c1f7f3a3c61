"""The values of the coordination report: periods, scopes, cases, measures.

A :class:`Measure` is a list of :class:`Case` rows (one Task, discharge, referral or
appointment each): ``counted`` puts a case in the denominator, ``met`` in the numerator.
The weekly trend, the owner, risk-tier and group breakdowns and the CSV table are all views
of those rows, so a chart and its table can never disagree.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from fhirbridge.report.summary import Report

__all__ = [
    "NO_OWNER",
    "TIERS",
    "Case",
    "CoordinationReport",
    "Measure",
    "Period",
    "Point",
    "ReportData",
    "Scope",
    "Unit",
]

#: Risk tiers in display order ("unknown": no RiskAssessment found).
TIERS = ("high", "moderate", "low", "unknown")
NO_OWNER = "(no owner)"
#: How a measure's figure reads: a share of its denominator, or a median of days.
Unit = Literal["share", "days"]


@dataclass(frozen=True, slots=True)
class Period:
    """Calendar dates ``start`` to ``end``, both included."""

    start: date
    end: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    def weeks(self) -> list[date]:
        """The Mondays of the weeks the period touches."""
        first = self.start - timedelta(days=self.start.weekday())
        return [first + timedelta(weeks=n) for n in range((self.end - first).days // 7 + 1)]


@dataclass(frozen=True, slots=True)
class Scope:
    """Optional restriction to one owner or one organization (references)."""

    owner: str | None = None
    organization: str | None = None

    def describe(self) -> str:
        """A short label for headings."""
        parts = [f"owner {self.owner}"] if self.owner else []
        if self.organization:
            parts.append(f"organization {self.organization}")
        return ", ".join(parts) or "all owners and organizations"


@dataclass(frozen=True, slots=True)
class ReportData:
    """What the measures read, as plain FHIR JSON from the server.

    ``encounters`` maps ``Encounter/id`` to the resource (those the Tasks name and the
    patients' other stays); ``tiers`` maps an ``Encounter/id`` or a ``Patient/id`` to its
    risk tier (``high``, ``moderate``, ``low``).
    """

    tasks: Sequence[Mapping[str, Any]] = ()
    encounters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tiers: Mapping[str, str] = field(default_factory=dict)
    appointments: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class Case:
    """One row a measure counts (one line of its CSV table)."""

    subject: str
    patient: str
    owner: str
    tier: str
    day: date
    counted: bool
    met: bool
    value: float | None = None
    group: str = ""
    detail: str = ""

    @property
    def week(self) -> date:
        """The Monday of the case's week."""
        return self.day - timedelta(days=self.day.weekday())


@dataclass(frozen=True, slots=True)
class Point:
    """One bar of a chart: its label, numerator, denominator and value (rate or median)."""

    label: str
    numerator: int
    denominator: int
    value: float | None


def _point(label: str, cases: Sequence[Case], unit: Unit) -> Point:
    counted = [c for c in cases if c.counted]
    met = sum(1 for c in counted if c.met)
    if unit == "days":
        values = [c.value for c in counted if c.met and c.value is not None]
        value = statistics.median(values) if values else None
    else:
        value = met / len(counted) if counted else None
    return Point(label, met, len(counted), value)


@dataclass(frozen=True, slots=True)
class Measure:
    """A coordination measure: its definition and the cases it counted."""

    id: str
    title: str
    definition: str
    numerator_label: str
    denominator_label: str
    cases: tuple[Case, ...]
    unit: Unit = "share"
    group_label: str = ""
    trend_override: tuple[Point, ...] | None = None
    #: Per owner, one point per week (overdue work per owner and week).
    owner_weeks: tuple[tuple[str, tuple[Point, ...]], ...] = ()

    @property
    def total(self) -> Point:
        """The headline figure."""
        return _point("all", self.cases, self.unit)

    def _by(self, key: Callable[[Case], str], order: Iterable[str] = ()) -> list[Point]:
        groups: defaultdict[str, list[Case]] = defaultdict(list)
        for label in order:
            groups[label] = []
        for case in self.cases:
            groups[key(case)].append(case)
        return [_point(label, cases, self.unit) for label, cases in groups.items()]

    def weekly(self, weeks: Sequence[date]) -> list[Point]:
        """One point per week (labelled by its Monday), empty weeks included."""
        if self.trend_override is not None:
            return list(self.trend_override)
        return self._by(lambda c: c.week.isoformat(), [w.isoformat() for w in weeks])

    def by_owner(self) -> list[Point]:
        """One point per owner, owners with no case met included, sorted by owner."""
        return sorted(self._by(lambda c: c.owner), key=lambda p: p.label)

    def by_tier(self) -> list[Point]:
        """One point per risk tier that has cases, in :data:`TIERS` order."""
        points = {p.label: p for p in self._by(lambda c: c.tier)}
        return [points[t] for t in TIERS if t in points and points[t].denominator]

    def by_group(self) -> list[Point]:
        """One point per ``group`` of the cases (empty when the measure has none)."""
        if not any(c.group for c in self.cases):
            return []
        return self._by(lambda c: c.group)

    def as_dict(self, weeks: Sequence[date]) -> dict[str, Any]:
        """A JSON-ready view: definition, headline and every breakdown."""

        def rows(points: Iterable[Point]) -> list[dict[str, Any]]:
            return [
                {
                    "label": p.label,
                    "numerator": p.numerator,
                    "denominator": p.denominator,
                    "value": p.value,
                }
                for p in points
            ]

        total = self.total
        return {
            "id": self.id,
            "title": self.title,
            "definition": self.definition,
            "unit": self.unit,
            "numerator_label": self.numerator_label,
            "denominator_label": self.denominator_label,
            "numerator": total.numerator,
            "denominator": total.denominator,
            "value": total.value,
            "weekly": rows(self.weekly(weeks)),
            "by_owner": rows(self.by_owner()),
            "by_tier": rows(self.by_tier()),
            "by_group": rows(self.by_group()),
            "by_owner_and_week": {owner: rows(points) for owner, points in self.owner_weeks},
            "group_label": self.group_label,
        }


@dataclass(frozen=True, slots=True)
class CoordinationReport:
    """Every measure for one period and scope, as of one day."""

    as_of: date
    period: Period
    scope: Scope
    measures: tuple[Measure, ...]
    by_code: Report

    @property
    def weeks(self) -> list[date]:
        """The weeks of the period (the trend charts' x axis)."""
        return self.period.weeks()

    def measure(self, measure_id: str) -> Measure:
        """The measure with this id (KeyError if absent)."""
        for measure in self.measures:
            if measure.id == measure_id:
                return measure
        raise KeyError(measure_id)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``report --json`` prints)."""
        return {
            **self.by_code.as_dict(),
            "period": {"from": self.period.start.isoformat(), "to": self.period.end.isoformat()},
            "scope": {"owner": self.scope.owner, "organization": self.scope.organization},
            "measures": [m.as_dict(self.weeks) for m in self.measures],
        }
