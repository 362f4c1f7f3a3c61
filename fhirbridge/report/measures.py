"""The coordination measures, as pure functions of what the FHIR server holds.

Measures follow the Task codes present in the data: TCM contact and visit and referral
tracking have their own definitions; every other code (medication reconciliation,
escalations, and whatever a rule pack adds: coverage reviews, social-need referrals,
no-show outreach) gets the "completed by its due date" measure under its own name.
Appointments on the server, when there are any, give the no-show measure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.report.model import (
    NO_OWNER,
    Case,
    CoordinationReport,
    Measure,
    Period,
    Point,
    ReportData,
    Scope,
)
from fhirbridge.report.summary import OPEN, build_report, task_code
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.values import parse_instant

__all__ = ["compute"]

#: Statuses of a Task that no longer asks for work and did not do it (not counted).
VOID = frozenset({"cancelled", "entered-in-error", "rejected"})
#: Encounter classes of an inpatient stay (what a readmission is).
INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})
#: Appointment statuses of an appointment whose time has come (the no-show denominator).
ATTENDED_OR_NOT = frozenset({"arrived", "checked-in", "fulfilled", "noshow"})
READMISSION_DAYS = 30
CONTACT_BUSINESS_DAYS = 2
#: Ages of open referrals, in days: (upper bound inclusive, label).
AGE_BUCKETS: tuple[tuple[int, str], ...] = (
    (7, "0-7 days"),
    (14, "8-14 days"),
    (30, "15-30 days"),
    (60, "31-60 days"),
    (10**6, "over 60 days"),
)


# -- projections -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Task:
    ref: str
    code: str
    display: str
    status: str
    patient: str
    owner: str
    encounter: str | None
    authored: date
    due: date | None
    closed: date | None
    anchor: date
    tier: str


def _display(task: Mapping[str, Any], code: str, codes: Mapping[str, str]) -> str:
    for coding in (task.get("code") or {}).get("coding") or ():
        if coding.get("code") == code and coding.get("display"):
            return str(coding["display"])
    return codes.get(code) or code


def _closed(task: Mapping[str, Any], authored: datetime | None) -> datetime | None:
    """When a Task stopped being open: executionPeriod.end, else a lastModified later than
    authoredOn, else the server's meta.lastUpdated."""
    end = parse_instant((task.get("executionPeriod") or {}).get("end"))
    if end is not None:
        return end
    modified = parse_instant(task.get("lastModified"))
    if modified is not None and (authored is None or modified > authored):
        return modified
    return parse_instant((task.get("meta") or {}).get("lastUpdated")) or modified


def _discharged(encounter: Mapping[str, Any] | None) -> datetime | None:
    if encounter is None:
        return None
    return parse_instant((encounter.get("period") or {}).get("end"))


class _Context:
    """Projections and look-ups shared by the measures."""

    def __init__(
        self,
        data: ReportData,
        *,
        calendar: BusinessCalendar,
        codes: Mapping[str, str],
        scope: Scope,
    ) -> None:
        self.data = data
        self.calendar = calendar
        projected = [(task, self._project(task, codes)) for task in data.tasks]
        kept = [(raw, t) for raw, t in projected if t is not None and self._in_scope(t, scope)]
        self.tasks: list[_Task] = [t for _, t in kept]
        self.raw: list[Mapping[str, Any]] = [raw for raw, _ in kept]

    def local(self, instant: datetime | None) -> date | None:
        return self.calendar.local_date(instant) if instant is not None else None

    def tier(self, encounter: str | None, patient: str) -> str:
        tiers = self.data.tiers
        return (tiers.get(encounter) if encounter else None) or tiers.get(patient) or "unknown"

    def _project(self, task: Mapping[str, Any], codes: Mapping[str, str]) -> _Task | None:
        authored_at = parse_instant(task.get("authoredOn"))
        updated = parse_instant((task.get("meta") or {}).get("lastUpdated"))
        authored = self.local(authored_at or updated)
        if authored is None:
            return None
        code = task_code(task)
        status = str(task.get("status") or "")
        encounter = local_reference(task.get("encounter"))
        patient = local_reference(task.get("for")) or "(no patient)"
        closed = None if status in OPEN else self.local(_closed(task, authored_at))
        anchor = self.local(_discharged(self.data.encounters.get(encounter or ""))) or authored
        return _Task(
            ref=f"Task/{task.get('id')}",
            code=code,
            display=_display(task, code, codes),
            status=status,
            patient=patient,
            owner=local_reference(task.get("owner")) or NO_OWNER,
            encounter=encounter,
            authored=authored,
            due=self.local(
                parse_instant(((task.get("restriction") or {}).get("period") or {}).get("end"))
            ),
            closed=closed,
            anchor=anchor,
            tier=self.tier(encounter, patient),
        )

    def _in_scope(self, task: _Task, scope: Scope) -> bool:
        if scope.owner and task.owner != scope.owner:
            return False
        if scope.organization:
            encounter = self.data.encounters.get(task.encounter or "") or {}
            provider = local_reference(encounter.get("serviceProvider"))
            return scope.organization in (task.owner, provider)
        return True

    def coded(self, code: str) -> list[_Task]:
        return [t for t in self.tasks if t.code == code]


def _case(task: _Task, *, day: date, counted: bool, met: bool, **extra: Any) -> Case:
    return Case(
        subject=task.ref,
        patient=task.patient,
        owner=task.owner,
        tier=task.tier,
        day=day,
        counted=counted,
        met=met,
        **extra,
    )


def _state(task: _Task) -> str:
    if task.status == "completed" and task.closed is not None:
        return f"completed {task.closed.isoformat()}"
    return task.status


# -- the measures ------------------------------------------------------------------------
def _tcm_contact(ctx: _Context, period: Period) -> Measure:
    cases = []
    for task in ctx.coded("tcm-contact"):
        if task.anchor not in period:
            continue
        deadline = ctx.calendar.add_business_days(task.anchor, CONTACT_BUSINESS_DAYS)
        done = task.status == "completed" and task.closed is not None
        met = done and task.closed is not None and task.closed <= deadline
        detail = f"{_state(task)}; deadline {deadline.isoformat()}"
        cases.append(
            _case(task, day=task.anchor, counted=task.status not in VOID, met=met, detail=detail)
        )
    return Measure(
        id="tcm-contact",
        title="TCM contact within 2 business days",
        definition=(
            "Qualifying discharges (a TCM contact Task, not cancelled: patient died or "
            "encounter voided) with the discharge in the period; met when the contact Task "
            "is completed by the 2nd business day after the discharge date (site calendar: "
            "weekends and holidays skipped)."
        ),
        numerator_label="contact completed within 2 business days",
        denominator_label="qualifying discharges",
        cases=tuple(cases),
    )


def _tcm_visit(ctx: _Context, period: Period) -> Measure:
    cases = []
    for task in ctx.coded("tcm-visit"):
        if task.anchor not in period:
            continue
        days = 7 if task.tier == "high" else 14
        met = (
            task.status == "completed"
            and task.closed is not None
            and task.closed <= task.anchor + timedelta(days=days)
        )
        cases.append(
            _case(
                task,
                day=task.anchor,
                counted=task.status not in VOID,
                met=met,
                group=f"{days}-day visit",
                detail=f"{_state(task)}; window {days} days",
            )
        )
    return Measure(
        id="tcm-visit",
        title="TCM visit within 7 days (high risk) or 14 days",
        definition=(
            "Qualifying discharges with a follow-up visit Task (not cancelled) and the "
            "discharge in the period; met when the visit Task is completed within 7 calendar "
            "days of discharge for high-risk patients (CPT 99496), 14 days for others "
            "(CPT 99495)."
        ),
        numerator_label="visit completed in its window",
        denominator_label="discharges with a visit Task",
        cases=tuple(cases),
        group_label="window",
    )


def _readmission_index(ctx: _Context) -> dict[str, list[Mapping[str, Any]]]:
    stays: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for ref, encounter in ctx.data.encounters.items():
        patient = local_reference(encounter.get("subject"))
        klass = (encounter.get("class") or {}).get("code")
        if patient and klass in INPATIENT and encounter.get("status") not in VOID:
            stays[patient].append({**encounter, "_ref": ref})
    return stays


def _readmissions(ctx: _Context, period: Period) -> Measure:
    stays = _readmission_index(ctx)
    cases = []
    seen: set[str] = set()
    for task in ctx.coded("tcm-contact"):
        if task.anchor not in period or task.status in VOID or task.encounter in seen:
            continue
        seen.add(task.encounter or task.ref)
        discharged = _discharged(ctx.data.encounters.get(task.encounter or ""))
        if discharged is None:
            continue
        last = task.anchor + timedelta(days=READMISSION_DAYS)
        readmitted: date | None = None
        for stay in stays.get(task.patient, ()):
            start = parse_instant((stay.get("period") or {}).get("start"))
            day = ctx.local(start)
            if (
                stay["_ref"] != task.encounter
                and start is not None
                and day is not None
                and start > discharged
                and day <= last
            ):
                readmitted = day if readmitted is None else min(readmitted, day)
        followed = (
            task.status == "completed"
            and task.closed is not None
            and (readmitted is None or task.closed <= readmitted)
        )
        detail = (
            f"readmitted {readmitted.isoformat()}" if readmitted else "not readmitted"
        ) + f"; contact {_state(task)}"
        cases.append(
            Case(
                subject=task.encounter or task.ref,
                patient=task.patient,
                owner=task.owner,
                tier=task.tier,
                day=task.anchor,
                counted=True,
                met=readmitted is not None,
                group="follow-up completed" if followed else "no completed follow-up",
                detail=detail,
            )
        )
    return Measure(
        id="readmissions",
        title="Readmissions within 30 days, with and without completed follow-up",
        definition=(
            "Qualifying discharges in the period (one per stay with a TCM contact Task); "
            "met when the server holds another inpatient Encounter of the patient starting "
            "after the discharge and within 30 days of it (by date; day 30 counts). Grouped by "
            "whether the TCM contact was completed (before the readmission, if any)."
        ),
        numerator_label="readmitted within 30 days",
        denominator_label="qualifying discharges",
        cases=tuple(cases),
        group_label="follow-up",
    )


def _referrals(ctx: _Context, period: Period, as_of: date) -> list[Measure]:
    tracking = ctx.coded("referral-tracking")
    completion, closing, open_ = [], [], []
    for task in tracking:
        if task.authored in period:
            completion.append(
                _case(
                    task,
                    day=task.authored,
                    counted=task.status not in VOID,
                    met=task.status == "completed",
                    detail=_state(task),
                )
            )
            if task.status == "completed" and task.closed is not None:
                days = (task.closed - task.authored).days
                closing.append(
                    _case(
                        task,
                        day=task.authored,
                        counted=True,
                        met=True,
                        value=float(days),
                        detail=f"closed in {days} days",
                    )
                )
        if task.status in OPEN and task.authored <= as_of:
            age = (as_of - task.authored).days
            bucket = next(label for bound, label in AGE_BUCKETS if age <= bound)
            open_.append(
                _case(
                    task,
                    day=task.authored,
                    counted=True,
                    met=age > 30,
                    value=float(age),
                    group=bucket,
                    detail=f"open {age} days",
                )
            )
    return [
        Measure(
            id="referral-completion",
            title="Referral completion rate",
            definition=(
                "Referrals placed in the period (a referral-tracking Task), leaving out those "
                "revoked or entered in error; met when the referral closed completed."
            ),
            numerator_label="referrals completed",
            denominator_label="referrals placed, not revoked",
            cases=tuple(completion),
        ),
        Measure(
            id="referral-days-to-close",
            title="Days to close a referral (median)",
            definition=(
                "Completed referrals placed in the period: calendar days from the tracking "
                "Task's authoredOn to its completion; the figure is the median."
            ),
            numerator_label="referrals completed",
            denominator_label="referrals completed",
            cases=tuple(closing),
            unit="days",
        ),
        Measure(
            id="referral-open-age",
            title="Open referrals by age",
            definition=(
                "Referral-tracking Tasks still open on the report date, by days since they "
                "were placed (any placement date); met when open more than 30 days."
            ),
            numerator_label="open more than 30 days",
            denominator_label="open referrals",
            cases=tuple(open_),
            group_label="age",
        ),
    ]


def _no_shows(ctx: _Context, period: Period, as_of: date) -> Measure | None:
    cases = []
    for appointment in ctx.data.appointments:
        status = str(appointment.get("status") or "")
        day = ctx.local(parse_instant(appointment.get("start")))
        if status not in ATTENDED_OR_NOT or day is None or day not in period or day > as_of:
            continue
        patient = next(
            (
                ref
                for p in appointment.get("participant") or ()
                if (ref := local_reference(p.get("actor"))) and ref.startswith("Patient/")
            ),
            "(no patient)",
        )
        tier = ctx.tier(None, patient)
        cases.append(
            Case(
                subject=f"Appointment/{appointment.get('id')}",
                patient=patient,
                owner=NO_OWNER,
                tier=tier,
                day=day,
                counted=True,
                met=status == "noshow",
                group="high risk" if tier == "high" else "others",
                detail=status,
            )
        )
    if not cases:
        return None
    return Measure(
        id="no-shows",
        title="No-shows: high-risk patients vs others",
        definition=(
            "Appointments on the server whose start falls in the period and has passed "
            "(status arrived, checked-in, fulfilled or noshow); met when noshow. Risk from the "
            "engine's latest RiskAssessment of the patient."
        ),
        numerator_label="no-shows",
        denominator_label="appointments due",
        cases=tuple(cases),
        group_label="risk",
    )


def _on_time(ctx: _Context, period: Period, code: str) -> Measure:
    tasks = ctx.coded(code)
    cases = [
        _case(
            task,
            day=task.authored,
            counted=task.status not in VOID,
            met=task.status == "completed"
            and task.closed is not None
            and (task.due is None or task.closed <= task.due),
            detail=f"{_state(task)}; due {task.due.isoformat() if task.due else '-'}",
        )
        for task in tasks
        if task.authored in period
    ]
    display = tasks[0].display if tasks else code
    return Measure(
        id=code,
        title=f"{display}: completed by its due date",
        definition=(
            f"Tasks coded {code} ({display}) written in the period, leaving out those "
            "cancelled, rejected or entered in error; met when completed on or before the "
            "Task's due date (restriction.period.end)."
        ),
        numerator_label="completed by the due date",
        denominator_label=f"{code} Tasks",
        cases=tuple(cases),
    )


def _overdue(ctx: _Context, period: Period, as_of: date) -> Measure:
    cases = [
        _case(
            task,
            day=task.due or task.authored,
            counted=True,
            met=task.due is not None and task.due < as_of,
            detail=f"{task.code}; due {task.due.isoformat() if task.due else '-'}",
        )
        for task in ctx.tasks
        if task.status in OPEN
    ]
    trend: list[Point] = []
    by_owner: defaultdict[str, list[Point]] = defaultdict(list)
    owners = sorted({t.owner for t in ctx.tasks})
    for monday in period.weeks():
        end = min(monday + timedelta(days=6), as_of, period.end)
        if end < monday:
            break
        open_then = [
            t
            for t in ctx.tasks
            if t.authored <= end and (t.status in OPEN or (t.closed is not None and t.closed > end))
        ]
        trend.append(_overdue_point(monday, open_then, end))
        for owner in owners:
            mine = [t for t in open_then if t.owner == owner]
            by_owner[owner].append(_overdue_point(monday, mine, end))
    return Measure(
        id="overdue",
        title="Overdue work per owner",
        definition=(
            "Open Tasks (requested, accepted, in progress, on hold...) on the report date, per "
            "owner; met when past the due date. The weekly trend and the table per owner and "
            "week count, at the end of each week, the Tasks open then and those of them "
            "already past due."
        ),
        numerator_label="open Tasks past due",
        denominator_label="open Tasks",
        cases=tuple(cases),
        trend_override=tuple(trend),
        owner_weeks=tuple(
            (owner, tuple(points))
            for owner, points in by_owner.items()
            if any(p.denominator for p in points)
        ),
    )


def _overdue_point(monday: date, open_then: list[_Task], end: date) -> Point:
    late = sum(1 for t in open_then if t.due is not None and t.due < end)
    return Point(
        monday.isoformat(), late, len(open_then), late / len(open_then) if open_then else None
    )


#: Codes with a measure of their own; every other code gets :func:`_on_time`.
SPECIFIC = frozenset({"tcm-contact", "tcm-visit", "referral-tracking"})
#: Codes listed first among the on-time measures.
FIRST = ("med-reconciliation",)


def compute(
    data: ReportData,
    *,
    period: Period,
    as_of: date,
    calendar: BusinessCalendar | None = None,
    codes: Mapping[str, str] | None = None,
    scope: Scope | None = None,
) -> CoordinationReport:
    """Every measure of ``data`` for ``period`` as of ``as_of`` (pure).

    ``calendar`` (default: UTC, Saturday and Sunday off) gives local dates and business
    days; ``codes`` maps Task codes to displays for Tasks that carry none.
    """
    scope = scope or Scope()
    ctx = _Context(data, calendar=calendar or BusinessCalendar(), codes=codes or {}, scope=scope)
    present = {t.code for t in ctx.tasks}
    measures: list[Measure] = []
    if "tcm-contact" in present:
        measures += [_tcm_contact(ctx, period), _readmissions(ctx, period)]
    if "tcm-visit" in present:
        measures.append(_tcm_visit(ctx, period))
    if "referral-tracking" in present:
        measures += _referrals(ctx, period, as_of)
    no_shows = _no_shows(ctx, period, as_of)
    if no_shows is not None:
        measures.append(no_shows)
    rest = sorted(
        present - SPECIFIC, key=lambda c: (FIRST.index(c) if c in FIRST else len(FIRST), c)
    )
    measures += [_on_time(ctx, period, code) for code in rest]
    if ctx.tasks:
        measures.append(_overdue(ctx, period, as_of))
    return CoordinationReport(
        as_of=as_of,
        period=period,
        scope=scope,
        measures=tuple(measures),
        by_code=build_report(ctx.raw, as_of),
    )
