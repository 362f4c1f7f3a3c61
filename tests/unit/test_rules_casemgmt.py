"""The shipped pack's case-management rules: coverage at discharge, social-need referrals,
no-show outreach and engagement escalation, periodic CarePlan review and completion, and
the med-reconciliation option; plus the format's new conditions and actions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.detect import detect
from fhirbridge.errors import RuleError
from fhirbridge.rules import PlanContext, RulePack, load_rules, mappings_dir
from fhirbridge.values import (
    CancelTasks,
    CompleteCarePlan,
    CompleteTasks,
    CreateReferral,
    CreateTask,
    Plan,
    Transition,
    TransitionKind,
)
from tests.unit._data import load
from tests.unit._plans import FRIDAY_3PM, plan_on_friday

K = TransitionKind
NEXT_MONDAY = date(2026, 3, 9)
CARE_TEAM = (
    ("case-manager", "Practitioner/cm"),
    ("financial-counselor", "Practitioner/fc"),
)
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"


@pytest.fixture(scope="module")
def pack() -> RulePack:
    """The shipped pack, loaded once."""
    return load_rules()


def transition(kind: K, focus: str, **facts: Any) -> Transition:
    """A transition of Patient/p1 on Friday 6 March 2026, 15:00 UTC."""
    return Transition(
        kind=kind,
        patient="Patient/p1",
        focus=focus,
        encounter="Encounter/e1" if focus.startswith("Encounter/") else None,
        occurred_at=FRIDAY_3PM,
        facts=facts,
    )


def plan(
    pack: RulePack,
    t: Transition,
    case: Mapping[str, Any] | None = None,
    risk: Mapping[str, str] | None = None,
    care_team: tuple[tuple[str, str], ...] = CARE_TEAM,
) -> Plan:
    """The pack's plan with the given looked-up case facts."""
    return plan_on_friday(pack, t, care_team=care_team, case=case, risk=risk)


def tasks(p: Plan) -> dict[str, CreateTask]:
    """The planned Tasks by code."""
    return {a.code: a for a in p.actions if isinstance(a, CreateTask)}


def discharge() -> Transition:
    """An inpatient discharge home."""
    return transition(K.DISCHARGE, "Encounter/e1", encounter_class="IMP", disposition_code="home")


# -- coverage --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["none", "inactive", "ending"])
def test_coverage_gap_at_discharge_plans_a_coverage_review(pack: RulePack, state: str) -> None:
    """No, inactive or ending coverage: coverage-review for the financial counsellor, due in
    1 business day (Friday -> Monday), focused on the Patient so coverage can close it;
    the plan's note names the rule and the looked-up facts."""
    planned = plan(pack, discharge(), case={"coverage": state, "needs": []})
    assert f"looked up: coverage={state}, needs=none" in planned.note  # the plan's reasons
    assert "discharge-coverage-review" in planned.note
    review = tasks(planned)["coverage-review"]
    assert review.owner == "Practitioner/fc"
    assert review.owner_source == "care-team:financial-counselor"
    assert review.due == NEXT_MONDAY
    assert review.focus == "Patient/p1"
    assert review.encounter == "Encounter/e1"


def test_coverage_review_falls_back_to_the_default_owner(pack: RulePack) -> None:
    """No financial counsellor on the care team: the default owner."""
    p = plan(pack, discharge(), case={"coverage": "none"}, care_team=CARE_TEAM[:1])
    assert tasks(p)["coverage-review"].owner == "Organization/cc"


@pytest.mark.parametrize(
    "case",
    [{"coverage": "active"}, {}],  # covered; or the lookup failed (fact absent)
)
def test_active_or_unknown_coverage_plans_no_review(
    pack: RulePack, case: Mapping[str, Any]
) -> None:
    """Active coverage, or coverage that could not be looked up: no coverage review."""
    assert "coverage-review" not in tasks(plan(pack, discharge(), case=case))


def test_coverage_becoming_active_completes_only_the_coverage_review(pack: RulePack) -> None:
    """coverage-active with the patient's coverage now active: complete the open
    coverage-review Tasks (focus the Patient); still ending: nothing."""
    active = transition(K.COVERAGE_ACTIVE, "Coverage/c1", status="active")
    (action,) = plan(pack, active, case={"coverage": "active"}).actions
    assert action == CompleteTasks(
        rule_id="coverage-active-completes-review",
        focus="Patient/p1",
        reason="coverage active",
        transition_key=active.key,
        code="coverage-review",
    )
    assert plan(pack, active, case={"coverage": "ending"}).actions == ()


# -- social needs ----------------------------------------------------------------------------


def food_need(name: str = "Question1") -> Transition:
    """The social-need transition of a Gravity Hunger Vital Sign screening response."""
    observation = load(
        f"sdohcc/Observation-SDOHCC-ObservationResponseHungerVitalSign{name}Example.json"
    )
    (found,) = detect(None, observation)
    return found


def test_social_need_of_a_patient_in_transitional_care_is_referred(pack: RulePack) -> None:
    """Open CarePlan, no open referral: a referral ServiceRequest in the food-insecurity
    category, due in 10 business days, its reason the screening response."""
    need = food_need()
    ctx = PlanContext(
        now=need.occurred_at + timedelta(hours=1),
        case={"careplan": "active", "referred": False},
    )
    (referral,) = pack.plan(need, ctx).actions
    assert isinstance(referral, CreateReferral)
    assert referral.need == "food-insecurity"
    assert (SDOHCC, "food-insecurity", "") in referral.categories
    assert (
        referral.reason == "Observation/SDOHCC-ObservationResponseHungerVitalSignQuestion1Example"
    )
    assert referral.patient == "Patient/pat-53234"
    assert referral.occurrence == date(2020, 9, 24)  # Thursday 10 Sep 2020 + 10 business days
    assert "food" in referral.display


def test_one_referral_per_need_and_day_however_many_questions(pack: RulePack) -> None:
    """HVS questions 1 and 3 of one screening plan the same referral (same identifier)."""
    ctx_case = {"careplan": "active", "referred": False}
    ids = set()
    for name in ("Question1", "Question3"):
        need = food_need(name)
        ctx = PlanContext(now=need.occurred_at + timedelta(hours=1), case=ctx_case)
        (referral,) = pack.plan(need, ctx).actions
        assert isinstance(referral, CreateReferral)
        ids.add(referral.identifier)
    assert len(ids) == 1


@pytest.mark.parametrize(
    "case",
    [
        {"careplan": "none", "referred": False},  # not in transitional care
        {"careplan": "completed", "referred": False},
        {"careplan": "active", "referred": True},  # already referred
        {"careplan": "active"},  # referrals could not be looked up
    ],
)
def test_social_need_not_referred(pack: RulePack, case: Mapping[str, Any]) -> None:
    """No open CarePlan, an open referral already, or unknown: no referral."""
    need = food_need()
    ctx = PlanContext(now=need.occurred_at + timedelta(hours=1), case=case)
    assert pack.plan(need, ctx).actions == ()


# -- no-shows --------------------------------------------------------------------------------


def noshow(appointment: str = "Appointment/a1") -> Transition:
    """A no-show of Patient/p1."""
    return transition(K.APPOINTMENT_NOSHOW, appointment)


@pytest.mark.parametrize(("tier", "priority"), [("high", "urgent"), ("low", "routine")])
def test_noshow_plans_outreach_next_business_day(pack: RulePack, tier: str, priority: str) -> None:
    """Outreach due the next business day, urgent when the latest LACE tier is high."""
    p = plan(pack, noshow(), case={"careplan": "active"}, risk={"lace": tier})
    (outreach,) = tasks(p).values()
    assert (outreach.code, outreach.due, outreach.priority) == ("outreach", NEXT_MONDAY, priority)
    assert outreach.owner == "Practitioner/cm"
    assert outreach.focus == "Appointment/a1"


def test_noshow_outside_transitional_care_plans_nothing(pack: RulePack) -> None:
    """No open transitional-care CarePlan: not our patient to chase."""
    assert plan(pack, noshow(), case={"careplan": "none"}).actions == ()


def test_second_noshow_in_a_window_escalates_once(pack: RulePack) -> None:
    """Lapsed engagement: an engagement-escalation; a third no-show of the same window plans
    the same escalation (one identifier per window), a new window a new one."""
    lapsed = {"careplan": "active", "engagement": "lapsed", "engagement_window": "Appointment/a1"}
    second = tasks(plan(pack, noshow("Appointment/a2"), case=lapsed))["engagement-escalation"]
    third = tasks(plan(pack, noshow("Appointment/a3"), case=lapsed))["engagement-escalation"]
    assert second.escalation and second.priority == "urgent"
    assert second.identifier == third.identifier
    later = {**lapsed, "engagement_window": "Appointment/a7"}
    fourth = tasks(plan(pack, noshow("Appointment/a8"), case=later))["engagement-escalation"]
    assert fourth.identifier != second.identifier
    engaged = {"careplan": "active", "engagement": "engaged", "engagement_window": "x"}
    assert "engagement-escalation" not in tasks(plan(pack, noshow(), case=engaged))


# -- periodic review and completion ---------------------------------------------------------


def test_review_due_plans_a_careplan_review_by_its_due_fact(pack: RulePack) -> None:
    """careplan-review-due: a careplan-review Task due on the period's last day, however old
    the period (a timer: max_event_age does not apply)."""
    due = transition(K.CAREPLAN_REVIEW_DUE, "CarePlan/cp1", due="2026-03-13")
    ctx = PlanContext(now=FRIDAY_3PM + timedelta(days=60), care_team=CARE_TEAM)
    (review,) = pack.plan(due, ctx).actions
    assert isinstance(review, CreateTask)
    assert (review.code, review.due, review.focus) == (
        "careplan-review",
        date(2026, 3, 13),
        "CarePlan/cp1",
    )


def test_careplan_done_withdraws_open_reviews_and_completes_the_plan(pack: RulePack) -> None:
    """careplan-done: cancel the open Tasks focused on the CarePlan (its reviews), then set
    the CarePlan completed."""
    done = transition(K.CAREPLAN_DONE, "CarePlan/cp1")
    cancel, complete = plan(pack, done).actions
    assert isinstance(cancel, CancelTasks) and cancel.focus == "CarePlan/cp1"
    assert isinstance(complete, CompleteCarePlan) and complete.careplan == "CarePlan/cp1"


# -- medication reconciliation option --------------------------------------------------------


def test_med_reconciliation_option_high_risk_keeps_it_for_high_risk_only(tmp_path: Path) -> None:
    """A site pack setting options: {med-reconciliation: high-risk} over the shipped one: no
    medication reconciliation at moderate risk, still at high risk (by the 7-day visit)."""
    site = tmp_path / "site.yaml"
    site.write_text("version: 1\ndefaults:\n  options: {med-reconciliation: high-risk}\n")
    rules = load_rules([mappings_dir() / "transitional-care.yaml", site])
    assert "med-reconciliation" not in tasks(plan(rules, discharge(), risk={"lace": "moderate"}))
    high = tasks(plan(rules, discharge(), risk={"lace": "high"}))
    assert high["med-reconciliation"].due == date(2026, 3, 13)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults:\n  options: {med-reconciliation: sometimes}\n", "not one of all, high-risk"),
        ("defaults:\n  options: {colour: blue}\n", "'colour' is not one of"),
        ("defaults:\n  review_interval_days: {urgent: 3}\n", "'urgent' is not one of"),
        (
            "rules:\n  - id: r\n    when: {kind: discharge, case: {weather: [rain]}}\n"
            "    then:\n      - complete-tasks: {reason: x}\n",
            "'weather' is not one of",
        ),
    ],
)
def test_bad_case_management_keys_fail_at_load_time(
    tmp_path: Path, text: str, message: str
) -> None:
    """Unknown options, option values, tiers and case facts name the file and key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n" + text)
    with pytest.raises(RuleError, match=message) as info:
        load_rules([bad])
    assert "bad.yaml" in str(info.value)


def test_discharge_refers_the_needs_on_record_once_with_the_screening(pack: RulePack) -> None:
    """A discharge finding the food-insecurity screening on record (no open referral) refers
    it; its identifier is the one the screening itself would plan, so the two paths never
    refer the need twice. No needs on record: no referral."""
    need = food_need()
    ctx = PlanContext(
        now=need.occurred_at + timedelta(hours=1),
        case={"careplan": "active", "referred": False},
    )
    (direct,) = pack.plan(need, ctx).actions
    assert isinstance(direct, CreateReferral)
    on_record = {**need.facts, "reason": need.focus, "recorded": "2020-09-10"}
    stay = Transition(
        kind=K.DISCHARGE,
        patient=need.patient,
        focus="Encounter/e1",
        encounter="Encounter/e1",
        occurred_at=need.occurred_at + timedelta(days=3),
        facts={"encounter_class": "IMP", "disposition_code": "home"},
    )
    later = PlanContext(now=stay.occurred_at, case={"needs": [on_record], "coverage": "active"})
    referrals = [a for a in pack.plan(stay, later).actions if isinstance(a, CreateReferral)]
    assert [r.identifier for r in referrals] == [direct.identifier]
    assert referrals[0].reason == need.focus
    assert referrals[0].encounter == "Encounter/e1"
    none = PlanContext(now=stay.occurred_at, case={"needs": [], "coverage": "active"})
    assert not [a for a in pack.plan(stay, none).actions if isinstance(a, CreateReferral)]
