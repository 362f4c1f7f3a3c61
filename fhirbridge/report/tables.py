"""CSV tables of the report: one per measure (its cases) and a summary (one row per measure).

Cells name resources by reference only (``Task/1``, ``Patient/2``): no names, no PHI
beyond what the Tasks' references already say.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fhirbridge.report.model import CoordinationReport, Measure

__all__ = [
    "CASE_COLUMNS",
    "SUMMARY_COLUMNS",
    "measure_csv",
    "owner_weeks_csv",
    "summary_csv",
    "write_csv",
]

CASE_COLUMNS = (
    "measure",
    "subject",
    "patient",
    "owner",
    "risk_tier",
    "date",
    "week",
    "in_denominator",
    "in_numerator",
    "value",
    "group",
    "detail",
)
SUMMARY_COLUMNS = (
    "measure",
    "title",
    "numerator",
    "denominator",
    "value",
    "unit",
    "numerator_is",
    "denominator_is",
    "definition",
)


def measure_csv(measure: Measure) -> str:
    """The cases of one measure as CSV text (header row first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CASE_COLUMNS)
    for case in measure.cases:
        writer.writerow(
            (
                measure.id,
                case.subject,
                case.patient,
                case.owner,
                case.tier,
                case.day.isoformat(),
                case.week.isoformat(),
                int(case.counted),
                int(case.counted and case.met),
                "" if case.value is None else f"{case.value:g}",
                case.group,
                case.detail,
            )
        )
    return out.getvalue()


def owner_weeks_csv(measure: Measure) -> str:
    """A measure's figures per owner and week (``week, owner, numerator, denominator``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("measure", "week", "owner", "numerator", "denominator"))
    for owner, points in measure.owner_weeks:
        for point in points:
            writer.writerow((measure.id, point.label, owner, point.numerator, point.denominator))
    return out.getvalue()


def summary_csv(report: CoordinationReport) -> str:
    """One row per measure: its headline figure and definition."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for measure in report.measures:
        total = measure.total
        writer.writerow(
            (
                measure.id,
                measure.title,
                total.numerator,
                total.denominator,
                "" if total.value is None else f"{total.value:.4g}",
                measure.unit,
                measure.numerator_label,
                measure.denominator_label,
                measure.definition,
            )
        )
    return out.getvalue()


def write_csv(report: CoordinationReport, folder: Path) -> list[Path]:
    """Write ``summary.csv``, ``{measure id}.csv`` per measure and ``{measure id}-by-week.csv``
    where a measure has figures per owner and week into ``folder`` (made if missing);
    returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.csv"]
    written[0].write_text(summary_csv(report), encoding="utf-8")
    for measure in report.measures:
        path = folder / f"{measure.id}.csv"
        path.write_text(measure_csv(measure), encoding="utf-8")
        written.append(path)
        if measure.owner_weeks:
            path = folder / f"{measure.id}-by-week.csv"
            path.write_text(owner_weeks_csv(measure), encoding="utf-8")
            written.append(path)
    return written
