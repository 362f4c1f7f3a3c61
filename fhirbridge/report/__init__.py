"""Coordination report: measures read from the FHIR server (the system of record), drawn as
SVG charts in one HTML page, with a CSV table per measure.

- :mod:`~fhirbridge.report.summary`: per-code Task figures (completion, on time, overdue);
- :mod:`~fhirbridge.report.model` and :mod:`~fhirbridge.report.measures`: the measures as
  pure functions of the server's resources;
- :mod:`~fhirbridge.report.fetch`: the searches that read them;
- :mod:`~fhirbridge.report.html` and :mod:`~fhirbridge.report.tables`: the page and CSV.
"""

from __future__ import annotations

from fhirbridge.report.measures import compute
from fhirbridge.report.model import (
    Case,
    CoordinationReport,
    Measure,
    Period,
    Point,
    ReportData,
    Scope,
)
from fhirbridge.report.summary import CodeFigures, Report, build_report

__all__ = [
    "Case",
    "CodeFigures",
    "CoordinationReport",
    "Measure",
    "Period",
    "Point",
    "Report",
    "ReportData",
    "Scope",
    "build_report",
    "compute",
]
