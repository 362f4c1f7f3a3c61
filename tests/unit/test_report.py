"""Coordination KPIs computed from the engine's Tasks as the server holds them."""

from __future__ import annotations

from datetime import date
from typing import Any

from fhirbridge.report import build_report
from fhirbridge.testing.builders import task as build_task


def task(
    code: str, status: str, due: str, owner: str | None = None, done: str | None = None
) -> dict[str, Any]:
    """An engine Task with a code, status, due date, owner and completion time."""
    return build_task(None, code=code, status=status, due=due, owner=owner, last_modified=done)


def test_completion_on_time_and_overdue_per_owner() -> None:
    """Completed on/after due, cancelled left out of the rate, open past due counted per owner."""
    tasks = [
        task("tcm-contact", "completed", "2026-12-01", done="2026-11-30T10:00:00Z"),  # on time
        task("tcm-contact", "completed", "2026-12-01", done="2026-12-03T10:00:00Z"),  # late
        task("tcm-contact", "cancelled", "2026-12-01"),  # patient died: not counted
        task("tcm-contact", "requested", "2026-12-01", owner="Practitioner/a"),  # overdue
        task("tcm-visit", "requested", "2026-12-20", owner="Practitioner/a"),  # not yet due
        task("referral-tracking", "in-progress", "2026-11-01"),  # overdue, no owner
    ]
    report = build_report(tasks, date(2026, 12, 10))
    contact = report.by_code["tcm-contact"]
    assert (contact.total, contact.completed, contact.on_time, contact.cancelled) == (4, 2, 1, 1)
    assert contact.completion == 2 / 3
    assert contact.overdue == 1
    assert report.by_code["tcm-visit"].overdue == 0
    assert report.overdue_by_owner == {"Practitioner/a": 1, "(no owner)": 1}
    assert report.as_dict()["by_code"]["referral-tracking"]["completion"] == 0.0
