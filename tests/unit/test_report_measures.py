"""The coordination measures' numerators and denominators on hand-built Tasks, Encounters and
Appointments, on fixed dates (discharges on Thursday 5 November 2026)."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from typing import Any

import pytest

from fhirbridge.report import Period, ReportData, Scope, compute
from fhirbridge.report.html import render_html
from fhirbridge.report.tables import measure_csv, write_csv
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.testing.builders import appointment as build_appointment
from fhirbridge.testing.builders import encounter as build_encounter
from fhirbridge.testing.builders import task as build_task

PERIOD = Period(date(2026, 11, 1), date(2026, 11, 30))
AS_OF = date(2026, 12, 1)
CALENDAR = BusinessCalendar(tz="UTC", weekend=frozenset({5, 6}))


def task(
    tid: str,
    code: str,
    status: str,
    *,
    patient: str = "p1",
    encounter: str | None = "e1",
    authored: str = "2026-11-05T16:00:00Z",
    due: str = "2026-11-09",
    done: str | None = None,
    owner: str | None = "Practitioner/casey",
    display: str | None = None,
) -> dict[str, Any]:
    """An engine Task as a server returns it (lastModified moves when it is worked)."""
    return build_task(
        tid,
        code=code,
        status=status,
        patient=patient,
        encounter=encounter,
        authored=authored,
        due=due,
        last_modified=done or authored,
        owner=owner,
        display=display,
    )


def stay(eid: str, patient: str, start: str, end: str | None, klass: str = "IMP") -> dict[str, Any]:
    """An Encounter with its period: finished when it has an end, in progress otherwise."""
    status = "finished" if end else "in-progress"
    return build_encounter(eid, patient=patient, cls=klass, status=status, start=start, end=end)


def encounters(*items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Encounters keyed by reference."""
    return {f"Encounter/{e['id']}": e for e in items}


def discharges(n: int) -> dict[str, dict[str, Any]]:
    """``n`` stays e1..en of patients p1..pn, discharged Thursday 5 Nov at 15:00 UTC."""
    return encounters(
        *(
            stay(f"e{i}", f"p{i}", "2026-11-01T08:00:00Z", "2026-11-05T15:00:00Z")
            for i in range(1, n + 1)
        )
    )


def run(data: ReportData, **kwargs: Any) -> Any:
    """Compute the report for November as of 1 December."""
    return compute(data, period=PERIOD, as_of=AS_OF, calendar=CALENDAR, **kwargs)


def test_tcm_contact_counts_two_business_days_and_leaves_out_cancelled() -> None:
    """Discharged Thursday: done Friday (day 1) and Monday (day 2) count; done Tuesday (day 3)
    is late; an open contact is not met; a cancelled one (patient died) is not counted."""
    tasks = [
        task(
            "1",
            "tcm-contact",
            "completed",
            patient="p1",
            encounter="e1",
            done="2026-11-06T10:00:00Z",
        ),
        task(
            "2",
            "tcm-contact",
            "completed",
            patient="p2",
            encounter="e2",
            done="2026-11-09T17:00:00Z",
        ),
        task(
            "3",
            "tcm-contact",
            "completed",
            patient="p3",
            encounter="e3",
            done="2026-11-10T09:00:00Z",
        ),
        task("4", "tcm-contact", "requested", patient="p4", encounter="e4"),
        task(
            "5",
            "tcm-contact",
            "cancelled",
            patient="p5",
            encounter="e5",
            done="2026-11-06T09:00:00Z",
        ),
    ]
    report = run(ReportData(tasks=tasks, encounters=discharges(5)))
    contact = report.measure("tcm-contact")
    total = contact.total
    assert (total.numerator, total.denominator) == (2, 4)
    assert total.value == 0.5
    met = {c.subject for c in contact.cases if c.met}
    assert met == {"Task/1", "Task/2"}
    late = next(c for c in contact.cases if c.subject == "Task/3")
    assert "deadline 2026-11-09" in late.detail


def test_tcm_contact_honours_holidays_of_the_site_calendar() -> None:
    """With Monday 9 Nov a holiday, the 2-business-day deadline moves to Tuesday."""
    holiday = BusinessCalendar(tz="UTC", holidays=frozenset({date(2026, 11, 9)}))
    tasks = [task("1", "tcm-contact", "completed", done="2026-11-10T09:00:00Z")]
    report = compute(
        ReportData(tasks=tasks, encounters=discharges(1)),
        period=PERIOD,
        as_of=AS_OF,
        calendar=holiday,
    )
    assert report.measure("tcm-contact").total.numerator == 1


def test_tcm_visit_window_is_7_days_for_high_risk_and_14_otherwise() -> None:
    """Both visits done on day 8 after discharge: late for the high-risk patient, on time for
    the other; the risk-tier breakdown says so."""
    tasks = [
        task(
            "1", "tcm-visit", "completed", patient="p1", encounter="e1", done="2026-11-13T10:00:00Z"
        ),
        task(
            "2", "tcm-visit", "completed", patient="p2", encounter="e2", done="2026-11-13T10:00:00Z"
        ),
    ]
    tiers = {"Encounter/e1": "high", "Patient/p2": "low"}
    visit = run(ReportData(tasks=tasks, encounters=discharges(2), tiers=tiers)).measure("tcm-visit")
    assert (visit.total.numerator, visit.total.denominator) == (1, 2)
    by_tier = {p.label: (p.numerator, p.denominator) for p in visit.by_tier()}
    assert by_tier == {"high": (0, 1), "low": (1, 1)}
    assert {p.label for p in visit.by_group()} == {"7-day visit", "14-day visit"}


def test_readmissions_within_30_days_split_by_completed_follow_up() -> None:
    """p1 contacted, then readmitted on day 20: readmitted, with follow-up. p2 not contacted,
    readmitted on day 30 (counts). p3 readmitted on day 31 (does not count). An ED visit of p4
    is not an inpatient readmission."""
    stays = discharges(4) | encounters(
        stay("r1", "p1", "2026-11-25T08:00:00Z", None),
        stay("r2", "p2", "2026-12-05T08:00:00Z", None),
        stay("r3", "p3", "2026-12-06T08:00:00Z", None),
        stay("r4", "p4", "2026-11-20T08:00:00Z", "2026-11-20T12:00:00Z", klass="EMER"),
    )
    tasks = [
        task(
            "1",
            "tcm-contact",
            "completed",
            patient="p1",
            encounter="e1",
            done="2026-11-06T10:00:00Z",
        ),
        task("2", "tcm-contact", "requested", patient="p2", encounter="e2"),
        task("3", "tcm-contact", "requested", patient="p3", encounter="e3"),
        task("4", "tcm-contact", "requested", patient="p4", encounter="e4"),
    ]
    readmissions = run(ReportData(tasks=tasks, encounters=stays)).measure("readmissions")
    assert (readmissions.total.numerator, readmissions.total.denominator) == (2, 4)
    groups = {p.label: (p.numerator, p.denominator) for p in readmissions.by_group()}
    assert groups == {"follow-up completed": (1, 1), "no completed follow-up": (1, 3)}


def test_referrals_completion_days_to_close_and_open_by_age() -> None:
    """Placed in November: one completed in 4 days, one in 10, one revoked (not counted),
    one still open after 26 days; one placed in September still open after 81 days."""

    def referral(tid: str, status: str, authored: str, done: str | None = None) -> dict[str, Any]:
        return task(
            tid,
            "referral-tracking",
            status,
            encounter=None,
            authored=authored,
            due="2026-12-30",
            done=done,
        )

    tasks = [
        referral("1", "completed", "2026-11-02T10:00:00Z", "2026-11-06T10:00:00Z"),
        referral("2", "completed", "2026-11-03T10:00:00Z", "2026-11-13T10:00:00Z"),
        referral("3", "cancelled", "2026-11-04T10:00:00Z", "2026-11-05T10:00:00Z"),
        referral("4", "in-progress", "2026-11-05T10:00:00Z"),
        referral("5", "requested", "2026-09-11T10:00:00Z"),
    ]
    report = run(ReportData(tasks=tasks))
    completion = report.measure("referral-completion").total
    assert (completion.numerator, completion.denominator) == (2, 3)
    assert report.measure("referral-days-to-close").total.value == 7.0
    age = report.measure("referral-open-age")
    assert (age.total.numerator, age.total.denominator) == (1, 2)
    assert {p.label: p.denominator for p in age.by_group()} == {
        "15-30 days": 1,
        "over 60 days": 1,
    }


def test_every_other_code_gets_an_on_time_measure_named_by_its_display() -> None:
    """Codes without a measure of their own (a rule pack's coverage review) are measured on
    'completed by the due date'; medication reconciliation is listed first."""
    tasks = [
        task(
            "1",
            "coverage-review",
            "completed",
            due="2026-11-10",
            done="2026-11-09T10:00:00Z",
            display="Review coverage",
        ),
        task(
            "2",
            "coverage-review",
            "completed",
            due="2026-11-10",
            done="2026-11-12T10:00:00Z",
            display="Review coverage",
        ),
        task("3", "med-reconciliation", "requested", due="2026-11-12"),
    ]
    report = run(ReportData(tasks=tasks, encounters=discharges(1)))
    ids = [m.id for m in report.measures]
    assert ids == ["med-reconciliation", "coverage-review", "overdue"]
    review = report.measure("coverage-review")
    assert review.title.startswith("Review coverage")
    assert (review.total.numerator, review.total.denominator) == (1, 2)


def test_overdue_per_owner_includes_an_owner_with_nothing_overdue() -> None:
    """As of 1 December: Casey has one Task past due and one not yet due; Robin has one open
    Task not due: Robin appears with 0 overdue. The weekly trend counts what was open then."""
    tasks = [
        task("1", "tcm-visit", "requested", due="2026-11-19", authored="2026-11-05T16:00:00Z"),
        task("2", "tcm-visit", "requested", due="2026-12-10", authored="2026-11-26T16:00:00Z"),
        task(
            "3",
            "ed-follow-up",
            "requested",
            due="2026-12-03",
            owner="Practitioner/robin",
            authored="2026-11-30T10:00:00Z",
        ),
        task(
            "4",
            "ed-follow-up",
            "completed",
            due="2026-11-10",
            authored="2026-11-05T10:00:00Z",
            done="2026-11-20T10:00:00Z",
        ),
    ]
    overdue = run(ReportData(tasks=tasks, encounters=discharges(1))).measure("overdue")
    owners = {p.label: (p.numerator, p.denominator) for p in overdue.by_owner()}
    assert owners == {"Practitioner/casey": (1, 2), "Practitioner/robin": (0, 1)}
    weekly = {p.label: (p.numerator, p.denominator) for p in overdue.weekly([])}
    # week of 16 Nov, ending Sunday 22 Nov: Tasks 1 (due 19th) and 4 (closed the 20th, so
    # open no more) -> 1 open, 1 late; week of 9 Nov: 1 and 4 open, 4 late (due the 10th)
    assert weekly["2026-11-16"] == (1, 1)
    assert weekly["2026-11-09"] == (1, 2)
    assert weekly["2026-11-30"] == (1, 3)
    per_owner = {
        owner: {p.label: (p.numerator, p.denominator) for p in points}
        for owner, points in overdue.owner_weeks
    }
    assert per_owner["Practitioner/casey"]["2026-11-16"] == (1, 1)
    assert per_owner["Practitioner/robin"]["2026-11-16"] == (0, 0)  # not written yet
    assert per_owner["Practitioner/robin"]["2026-11-30"] == (0, 1)


def test_no_shows_compare_high_risk_patients_with_others() -> None:
    """Appointments of November that have passed: the high-risk patient missed 1 of 2, the
    others 0 of 1; a booked future one and a cancelled one are not counted."""

    def appointment(aid: str, patient: str, status: str, start: str) -> dict[str, Any]:
        return build_appointment(aid, patient=patient, status=status, start=start, end=None)

    appointments = [
        appointment("a1", "p1", "noshow", "2026-11-10T09:00:00Z"),
        appointment("a2", "p1", "fulfilled", "2026-11-17T09:00:00Z"),
        appointment("a3", "p2", "fulfilled", "2026-11-12T09:00:00Z"),
        appointment("a4", "p2", "cancelled", "2026-11-13T09:00:00Z"),
    ]
    data = ReportData(
        tasks=[task("1", "tcm-visit", "requested")],
        encounters=discharges(1),
        tiers={"Patient/p1": "high", "Patient/p2": "moderate"},
        appointments=appointments,
    )
    no_shows = run(data).measure("no-shows")
    groups = {p.label: (p.numerator, p.denominator) for p in no_shows.by_group()}
    assert groups == {"high risk": (1, 2), "others": (0, 1)}


def test_scope_by_owner_and_by_organization() -> None:
    """--owner keeps that owner's Tasks; --organization keeps Tasks it owns or whose stay it
    provided."""
    stays = discharges(2)
    stays["Encounter/e2"]["serviceProvider"] = {"reference": "Organization/north"}
    tasks = [
        task("1", "tcm-contact", "requested", patient="p1", encounter="e1"),
        task(
            "2",
            "tcm-contact",
            "requested",
            patient="p2",
            encounter="e2",
            owner="Practitioner/robin",
        ),
    ]
    data = ReportData(tasks=tasks, encounters=stays)
    mine = run(data, scope=Scope(owner="Practitioner/robin")).measure("tcm-contact")
    assert [c.subject for c in mine.cases] == ["Task/2"]
    north = run(data, scope=Scope(organization="Organization/north")).measure("tcm-contact")
    assert [c.subject for c in north.cases] == ["Task/2"]


def test_a_discharge_outside_the_period_is_not_counted() -> None:
    """A contact Task for an October discharge stays out of November's TCM figures."""
    stays = encounters(stay("e1", "p1", "2026-10-20T08:00:00Z", "2026-10-29T15:00:00Z"))
    report = run(ReportData(tasks=[task("1", "tcm-contact", "requested")], encounters=stays))
    assert report.measure("tcm-contact").total.denominator == 0


def test_csv_rows_and_html_bars_match_the_cases(tmp_path: Any) -> None:
    """Each measure's CSV has one row per case; the page has one chart per breakdown with one
    SVG bar group per point, and the headline's numerator and denominator."""
    tasks = [
        task(
            "1",
            "tcm-contact",
            "completed",
            patient="p1",
            encounter="e1",
            done="2026-11-06T10:00:00Z",
        ),
        task("2", "tcm-contact", "requested", patient="p2", encounter="e2"),
    ]
    report = run(ReportData(tasks=tasks, encounters=discharges(2), tiers={"Patient/p1": "high"}))
    contact = report.measure("tcm-contact")
    rows = list(csv.DictReader(io.StringIO(measure_csv(contact))))
    assert [(r["subject"], r["in_numerator"]) for r in rows] == [("Task/1", "1"), ("Task/2", "0")]
    written = write_csv(report, tmp_path / "csv")
    assert {p.name for p in written} >= {
        "summary.csv",
        "tcm-contact.csv",
        "overdue.csv",
        "overdue-by-week.csv",
    }

    page = render_html(report, generated=datetime(2026, 12, 1, 9, 0))
    assert "<script" not in page and "http://" not in page.split("<svg", 1)[0]
    weekly_bars = re.findall(r'id="tcm-contact-weekly-bar-\d+"', page)
    assert len(weekly_bars) == len(report.weeks) == 6  # 1 Nov 2026 is a Sunday
    assert len(re.findall(r'id="tcm-contact-tier-bar-\d+"', page)) == 2
    assert 'data-numerator="1" data-denominator="2"' in page
    assert 'id="overdue-by-week"' in page


@pytest.mark.parametrize(
    ("status", "counted"),
    [
        ("entered-in-error", False),  # a Task voided on the server
        ("rejected", False),  # the owner refused it: not a TCM-qualifying discharge
        ("failed", True),  # tried and failed: counted, not met
    ],
)
def test_which_statuses_count_in_the_contact_denominator(status: str, counted: bool) -> None:
    """Only Tasks that were voided stay out of the denominator."""
    report = run(ReportData(tasks=[task("1", "tcm-contact", status)], encounters=discharges(1)))
    assert report.measure("tcm-contact").total.denominator == int(counted)
