"""The coordination report as one self-contained HTML page.

Charts are inline SVG (:mod:`fhirbridge.report.charts`), the stylesheet is inlined and every
CSV table is a ``data:`` link, so the file needs no server, script or network to be read,
and can be mailed or archived as it is. Templates are Jinja2 with autoescaping.
"""

from __future__ import annotations

import base64
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from fhirbridge.report.charts import bar_chart
from fhirbridge.report.model import CoordinationReport, Measure, Point
from fhirbridge.report.tables import measure_csv, owner_weeks_csv, summary_csv

__all__ = ["environment", "figure_text", "render_html", "stylesheet"]


@cache
def environment() -> Environment:
    """The Jinja2 environment of the report's (and the console's) templates."""
    env = Environment(
        loader=PackageLoader("fhirbridge.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["figure"] = figure_text
    return env


@cache
def stylesheet() -> Markup:
    """The shared stylesheet, to inline in a ``<style>`` element."""
    text = files("fhirbridge.report").joinpath("templates", "style.css").read_text("utf-8")
    return Markup(text)  # noqa: S704 - our own packaged file, not user input


def figure_text(point: Point, unit: str) -> str:
    """``62% (5 of 8)``, ``4 days (median of 3)``, or ``no cases``."""
    if point.value is None:
        return "no cases"
    if unit == "days":
        return f"{point.value:g} days (median of {point.numerator})"
    return f"{point.value:.0%} ({point.numerator} of {point.denominator})"


def _data_uri(text: str) -> str:
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


def _charts(measure: Measure, report: CoordinationReport) -> list[dict[str, Any]]:
    charts = [
        ("weekly", "Weekly trend (week starting)", measure.weekly(report.weeks), True),
        ("owner", "By owner", measure.by_owner(), len(measure.by_owner()) > 4),
        ("tier", "By risk tier", measure.by_tier(), False),
    ]
    if measure.by_group():
        charts.append(("group", f"By {measure.group_label or 'group'}", measure.by_group(), False))
    out = []
    for kind, title, points, rotate in charts:
        if not points:  # e.g. no risk tier known: no empty frame
            continue
        chart_id = f"{measure.id}-{kind}"
        svg = bar_chart(chart_id, points, unit=measure.unit, title=title, rotate=rotate)
        out.append(
            {
                "id": chart_id,
                "title": title,
                "bars": len(points),
                "svg": Markup(svg),  # noqa: S704 - matplotlib's SVG; it escapes its text
                "points": points,
            }
        )
    return out


def render_html(report: CoordinationReport, *, generated: datetime, server: str = "") -> str:
    """The report page for ``report`` (``generated``: when the figures were read)."""
    measures = [
        {
            "m": measure,
            "total": measure.total,
            "charts": _charts(measure, report),
            "csv": _data_uri(measure_csv(measure)),
            "weeks_csv": _data_uri(owner_weeks_csv(measure)) if measure.owner_weeks else "",
        }
        for measure in report.measures
    ]
    return (
        environment()
        .get_template("report.html")
        .render(
            report=report,
            measures=measures,
            summary_csv=_data_uri(summary_csv(report)),
            by_code=report.by_code.as_dict(),
            generated=generated,
            server=server,
            style=stylesheet(),
        )
    )
