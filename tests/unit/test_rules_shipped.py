"""The shipped rule pack (mappings/transitional-care.yaml), scenario by scenario."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import pytest

from fhirbridge.rules import RulePack, load_rules
from fhirbridge.values import (
    CancelTasks,
    CompleteTasks,
    CreateTask,
    Plan,
    Transition,
    TransitionKind,
)
from tests.unit._plans import FRIDAY_3PM, plan_on_friday

K = TransitionKind
BASE = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
NUBC = "http://terminology.hl7.org/CodeSystem/nubc-UB92"
NEXT_MONDAY = date(2026, 3, 9)
NEXT_TUESDAY = date(2026, 3, 10)
CARE_TEAM = (
    ("case-manager", "Practitioner/cm"),
    ("case-manager-lead", "Practitioner/lead"),
)


@pytest.fixture(scope="module")
def pack() -> RulePack:
    """The shipped pack, loaded once."""
    return load_rules()


def _discharge(
    code: str | None = "home",
    system: str | None = BASE,
    kind: K = K.DISCHARGE,
    encounter_class: str = "IMP",
) -> Transition:
    facts: dict[str, Any] = {"encounter_class": encounter_class}
    if code is not None:
        facts["disposition_code"] = code
    if system is not None:
        facts["disposition_system"] = system
    return Transition(
        kind=kind,
        patient="Patient/p1",
        focus="Encounter/e1",
        encounter="Encounter/e1",
        occurred_at=FRIDAY_3PM,
        facts=facts,
    )


def _plan(
    pack: RulePack,
    transition: Transition,
    risk: Mapping[str, str] | None = None,
    care_team: tuple[tuple[str, str], ...] = CARE_TEAM,
) -> Plan:
    return plan_on_friday(pack, transition, care_team=care_team, risk=risk)


def _tasks(plan: Plan) -> dict[str, CreateTask]:
    return {a.code: a for a in plan.actions if isinstance(a, CreateTask)}


def test_discharge_home_plans_tcm_contact_and_14_day_visit(pack: RulePack) -> None:
    """Home, not high risk: contact in 2 business days, visit in 14 calendar days, and (pack
    option med-reconciliation: all) medication reconciliation by the visit."""
    plan = _plan(pack, _discharge("home"), risk={"lace": "moderate"})
    tasks = _tasks(plan)
    assert set(tasks) == {"tcm-contact", "tcm-visit", "med-reconciliation"}
    assert tasks["med-reconciliation"].due == date(2026, 3, 20)
    contact, visit = tasks["tcm-contact"], tasks["tcm-visit"]
    assert contact.display == "Interactive contact within 2 business days"
    assert contact.due == NEXT_TUESDAY  # Friday + 2 business days
    assert contact.priority == "routine"
    assert visit.display == "Follow-up visit"
    assert visit.due == date(2026, 3, 20)
    assert contact.owner == visit.owner == "Practitioner/cm"
    assert contact.owner_source == "care-team:case-manager"
    assert contact.add_to_careplan
    assert not contact.escalation
    assert contact.focus == "Encounter/e1"
    assert contact.encounter == "Encounter/e1"


def test_discharge_home_high_risk_plans_7_day_visit_and_med_reconciliation(pack: RulePack) -> None:
    """LACE high: the visit is due in 7 days and medication reconciliation is added."""
    tasks = _tasks(_plan(pack, _discharge("home"), risk={"lace": "high"}))
    assert set(tasks) == {"tcm-contact", "tcm-visit", "med-reconciliation"}
    assert tasks["tcm-visit"].due == date(2026, 3, 13)
    assert tasks["med-reconciliation"].due == date(2026, 3, 13)
    assert tasks["tcm-contact"].due == NEXT_TUESDAY


def test_unknown_risk_tier_counts_as_not_high(pack: RulePack) -> None:
    """No LACE score computed: tier 'unknown', which `{not: [high]}` matches (so the 14-day
    visit, and medication reconciliation by it, not the high-risk 7-day pair)."""
    tasks = _tasks(_plan(pack, _discharge("home"), risk={}))
    assert tasks["tcm-visit"].due == date(2026, 3, 20)
    assert tasks["med-reconciliation"].due == date(2026, 3, 20)
    assert tasks["med-reconciliation"].rule_id == "discharge-community-med-reconciliation"


def test_contact_identifier_does_not_depend_on_the_risk_tier(pack: RulePack) -> None:
    """Seen again after its risk tier changed, a discharge's contact Task is the same Task."""
    low = _tasks(_plan(pack, _discharge("home"), risk={"lace": "low"}))
    high = _tasks(_plan(pack, _discharge("home"), risk={"lace": "high"}))
    assert low["tcm-contact"].identifier == high["tcm-contact"].identifier


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (BASE, "alt-home"),  # someone else's home
        (NUBC, "1"),  # Da Vinci's NUBC "1"
        (NUBC, "06"),  # home health
        ("http://example.org/local", "home"),  # unknown system, base code
    ],
)
def test_other_community_codes_plan_tcm(pack: RulePack, system: str, code: str) -> None:
    """Every community disposition gets the TCM tasks."""
    assert set(_tasks(_plan(pack, _discharge(code, system)))) == {
        "tcm-contact",
        "tcm-visit",
        "med-reconciliation",
    }


@pytest.mark.parametrize("encounter_class", ["ACUTE", "NONAC", "OBSENC", "SS"])
def test_tcm_applies_to_every_qualifying_class(pack: RulePack, encounter_class: str) -> None:
    """Inpatient (and its children), observation and short stay discharges qualify."""
    plan = _plan(pack, _discharge("home", encounter_class=encounter_class))
    assert "tcm-contact" in _tasks(plan)


def test_ambulatory_discharge_home_plans_nothing(pack: RulePack) -> None:
    """An AMB encounter is not a TCM-qualifying discharge."""
    plan = _plan(pack, _discharge("home", encounter_class="AMB"))
    assert plan.actions == ()
    assert plan.note == "no rule matched"


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (BASE, "snf"),
        (BASE, "rehab"),
        (BASE, "long"),
        (BASE, "psy"),
        (BASE, "other-hcf"),
        (BASE, "hosp"),  # hospice
        (NUBC, "03"),
        (NUBC, "02"),
        (NUBC, "50"),
    ],
)
def test_facility_discharges_plan_a_handoff_only(pack: RulePack, system: str, code: str) -> None:
    """Post-acute, transfer and hospice: one handoff Task in 1 business day, no TCM."""
    tasks = _tasks(_plan(pack, _discharge(code, system)))
    assert set(tasks) == {"care-handoff"}
    handoff = tasks["care-handoff"]
    assert handoff.display == "Care-transition handoff to the receiving facility"
    assert handoff.due == NEXT_MONDAY


@pytest.mark.parametrize(("code", "system"), [(None, None), ("oth", BASE), ("21", NUBC)])
def test_unknown_disposition_asks_to_confirm_and_plans_tcm(
    pack: RulePack, code: str | None, system: str | None
) -> None:
    """Missing or 'other': confirm the disposition in 1 business day, plus the community tasks."""
    tasks = _tasks(_plan(pack, _discharge(code, system)))
    assert set(tasks) == {"confirm-disposition", "tcm-contact", "tcm-visit", "med-reconciliation"}
    assert tasks["confirm-disposition"].display == "Confirm discharge disposition"
    assert tasks["confirm-disposition"].due == NEXT_MONDAY


def test_against_advice_plans_urgent_outreach(pack: RulePack) -> None:
    """Left against advice: outreach in 1 business day at urgent priority, no TCM."""
    tasks = _tasks(_plan(pack, _discharge("aadvice")))
    assert set(tasks) == {"ama-outreach"}
    assert tasks["ama-outreach"].priority == "urgent"
    assert tasks["ama-outreach"].due == NEXT_MONDAY


def test_discharge_expired_cancels_open_work(pack: RulePack) -> None:
    """Disposition 'exp': the patient's open Tasks are cancelled; nothing is created."""
    plan = _plan(pack, _discharge("exp"))
    assert plan.actions == (
        CancelTasks(
            rule_id="discharge-expired-cancel-open-work",
            patient="Patient/p1",
            encounter=None,
            status="cancelled",
            reason="patient deceased",
            transition_key="discharge|Encounter/e1",
        ),
    )


@pytest.mark.parametrize(
    ("code", "expected"), [("home", {"ed-follow-up"}), (None, {"ed-follow-up"}), ("snf", set())]
)
def test_ed_discharge(pack: RulePack, code: str | None, expected: set[str]) -> None:
    """ED visit ended without admission: follow-up call in 2 business days for community/unknown."""
    transition = _discharge(
        code, BASE if code else None, kind=K.ED_DISCHARGE, encounter_class="EMER"
    )
    tasks = _tasks(_plan(pack, transition))
    assert set(tasks) == expected
    if expected:
        assert tasks["ed-follow-up"].due == NEXT_TUESDAY


def test_readmission_escalates_to_the_case_manager(pack: RulePack) -> None:
    """A readmission raises an urgent escalation to the case manager, due in 1 business day."""
    transition = Transition(
        kind=K.READMISSION,
        patient="Patient/p1",
        focus="Encounter/e2",
        encounter="Encounter/e2",
        occurred_at=FRIDAY_3PM,
    )
    (task,) = _plan(pack, transition).actions
    assert isinstance(task, CreateTask)
    assert task.code == "readmission-review"
    assert task.escalation
    assert task.priority == "urgent"
    assert task.due == NEXT_MONDAY
    assert task.owner == "Practitioner/cm"
    no_team = _plan(pack, transition, care_team=()).actions[0]
    assert isinstance(no_team, CreateTask)
    assert (no_team.owner, no_team.owner_source) == ("Organization/cc", "default")


def test_death_cancels_every_open_task_of_the_patient(pack: RulePack) -> None:
    """A death transition cancels the patient's open Tasks with reason 'patient deceased'."""
    transition = Transition(
        kind=K.DEATH, patient="Patient/p1", focus="Patient/p1", occurred_at=FRIDAY_3PM
    )
    (action,) = _plan(pack, transition).actions
    assert isinstance(action, CancelTasks)
    assert (action.patient, action.encounter, action.status, action.reason) == (
        "Patient/p1",
        None,
        "cancelled",
        "patient deceased",
    )


def test_encounter_cancelled_cancels_that_encounters_tasks(pack: RulePack) -> None:
    """Cancelled encounter: its open Tasks are cancelled, scoped to that encounter only."""
    transition = _discharge(kind=K.ENCOUNTER_CANCELLED)
    (action,) = _plan(pack, transition).actions
    assert isinstance(action, CancelTasks)
    assert action.encounter == "Encounter/e1"
    assert action.reason == "encounter cancelled or entered in error"


def test_encounter_scope_never_widens_to_the_patient(pack: RulePack) -> None:
    """Without any encounter, an encounter-scoped cancel is skipped, not patient-wide."""
    focus_only = Transition(
        kind=K.ENCOUNTER_CANCELLED,
        patient="Patient/p1",
        focus="Encounter/e7",
        occurred_at=FRIDAY_3PM,
    )
    (action,) = _plan(pack, focus_only).actions
    assert isinstance(action, CancelTasks)
    assert action.encounter == "Encounter/e7"  # the focus is the encounter
    nothing = Transition(
        kind=K.ENCOUNTER_CANCELLED,
        patient="Patient/p1",
        focus="Appointment/a",
        occurred_at=FRIDAY_3PM,
    )
    plan = _plan(pack, nothing)
    assert plan.actions == ()
    assert (
        "skipped encounter-cancelled: cancel-tasks scope encounter, but no encounter" in plan.note
    )


def _referral(kind: K, **facts: Any) -> Transition:
    return Transition(
        kind=kind,
        patient="Patient/p1",
        focus="ServiceRequest/sr1",
        encounter="Encounter/e1",
        occurred_at=FRIDAY_3PM,
        facts=facts,
    )


def test_referral_placed_is_tracked_until_its_due_date(pack: RulePack) -> None:
    """A new referral gets a tracking Task on the ServiceRequest, due when the referral is."""
    (task,) = _plan(pack, _referral(K.REFERRAL_PLACED, due="2026-04-01")).actions
    assert isinstance(task, CreateTask)
    assert task.code == "referral-tracking"
    assert task.focus == "ServiceRequest/sr1"
    assert task.due == date(2026, 4, 1)
    assert task.priority == "routine"


@pytest.mark.parametrize("due", [None, "not a date"])
def test_referral_without_a_due_date_is_tracked_for_30_days(
    pack: RulePack, due: str | None
) -> None:
    """No (usable) due fact: the tracking Task is due 30 calendar days after the referral."""
    facts = {"due": due} if due else {}
    (task,) = _plan(pack, _referral(K.REFERRAL_PLACED, **facts)).actions
    assert isinstance(task, CreateTask)
    assert task.due == date(2026, 4, 5)


def test_referral_due_fact_may_be_an_instant_or_a_date(pack: RulePack) -> None:
    """A datetime or date fact works as well as an ISO text."""
    for due in (datetime(2026, 4, 2, 12, tzinfo=UTC), date(2026, 4, 2), "2026-04-02T12:00:00Z"):
        (task,) = _plan(pack, _referral(K.REFERRAL_PLACED, due=due)).actions
        assert isinstance(task, CreateTask)
        assert task.due == date(2026, 4, 2)


def test_referral_closed_completed_completes_the_tracking_task(pack: RulePack) -> None:
    """A completed referral completes the engine's Tasks focused on the ServiceRequest."""
    plan = _plan(pack, _referral(K.REFERRAL_CLOSED, outcome="completed"))
    assert plan.actions == (
        CompleteTasks(
            rule_id="referral-closed-completed",
            focus="ServiceRequest/sr1",
            reason="referral completed",
            transition_key="referral-closed|ServiceRequest/sr1",
        ),
    )


def test_referral_closed_cancelled_closes_only_the_tracking_task(pack: RulePack) -> None:
    """A revoked referral cancels its tracking Task (by focus), not the encounter's work."""
    (action,) = _plan(pack, _referral(K.REFERRAL_CLOSED, outcome="cancelled")).actions
    assert isinstance(action, CancelTasks)
    assert action.focus == "ServiceRequest/sr1"
    assert action.encounter is None
    assert action.status == "cancelled"
    assert "revoked" in action.reason


def test_referral_closed_with_another_outcome_does_nothing(pack: RulePack) -> None:
    """An outcome no rule names (or none) plans nothing."""
    assert _plan(pack, _referral(K.REFERRAL_CLOSED, outcome="other")).actions == ()
    assert _plan(pack, _referral(K.REFERRAL_CLOSED)).actions == ()


def test_referral_overdue_escalates(pack: RulePack) -> None:
    """An overdue referral raises an urgent escalation due in 1 business day."""
    (task,) = _plan(pack, _referral(K.REFERRAL_OVERDUE)).actions
    assert isinstance(task, CreateTask)
    assert (task.code, task.priority, task.due, task.escalation) == (
        "referral-escalation",
        "urgent",
        NEXT_MONDAY,
        True,
    )
    assert task.owner_source == "care-team:case-manager-lead"


@pytest.mark.parametrize("kind", [K.TASK_OVERDUE, K.TASK_FAILED])
def test_overdue_or_failed_task_escalates_to_the_lead(pack: RulePack, kind: K) -> None:
    """An overdue or failed Task escalates to the case-manager lead, else the default owner."""
    transition = Transition(
        kind=kind, patient="Patient/p1", focus="Task/t1", occurred_at=FRIDAY_3PM
    )
    (task,) = _plan(pack, transition).actions
    assert isinstance(task, CreateTask)
    assert (task.code, task.priority, task.due, task.escalation) == (
        "task-escalation",
        "urgent",
        NEXT_MONDAY,
        True,
    )
    assert (task.owner, task.owner_source) == ("Practitioner/lead", "care-team:case-manager-lead")
    assert task.focus == "Task/t1"
    only_cm = _plan(pack, transition, care_team=(("case-manager", "Practitioner/cm"),))
    fallback = only_cm.actions[0]
    assert isinstance(fallback, CreateTask)
    assert (fallback.owner, fallback.owner_source) == ("Organization/cc", "default")


def test_an_overdue_escalation_is_not_escalated_again(pack: RulePack) -> None:
    """An escalation Task that is itself overdue does not start a chain of escalations."""
    transition = Transition(
        kind=K.TASK_OVERDUE,
        patient="Patient/p1",
        focus="Task/esc",
        occurred_at=FRIDAY_3PM,
        facts={"code": "task-escalation"},
    )
    assert _plan(pack, transition).actions == ()
    other = Transition(
        kind=K.TASK_OVERDUE,
        patient="Patient/p1",
        focus="Task/t2",
        occurred_at=FRIDAY_3PM,
        facts={"code": "tcm-contact"},
    )
    assert len(_plan(pack, other).actions) == 1


@pytest.mark.parametrize("kind", [K.ADMISSION, K.ED_VISIT, K.TRANSFER, K.TASK_COMPLETED])
def test_kinds_without_a_shipped_rule_plan_nothing(pack: RulePack, kind: K) -> None:
    """Admissions, ED arrivals, transfers and completed Tasks are journalled only."""
    transition = Transition(
        kind=kind, patient="Patient/p1", focus="Encounter/e1", occurred_at=FRIDAY_3PM
    )
    assert _plan(pack, transition).actions == ()
