"""Rule evaluation mechanics (fhirbridge.rules.evaluate) on small packs written for each test."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.rules import BusinessCalendar, PlanContext, RulePack, load_rules
from fhirbridge.rules.evaluate import TIMER_KINDS, task_identifier
from fhirbridge.values import CancelTasks, CreateTask, Plan, Transition, TransitionKind

K = TransitionKind
THURSDAY_3PM = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)
NOW = THURSDAY_3PM + timedelta(minutes=5)


def _pack(tmp_path: Path, rules: str, defaults: str = "") -> RulePack:
    path = tmp_path / "pack.yaml"
    path.write_text(
        "version: 1\n"
        + (f"defaults: {defaults}\n" if defaults else "")
        + "codes:\n  c: {display: Do it}\n"
        + "rules:\n"
        + rules,
        encoding="utf-8",
    )
    return load_rules([path])


def _task_rule(rule_id: str = "r", when: str = "{kind: discharge}", task: str = "") -> str:
    return (
        f"  - id: {rule_id}\n"
        f"    when: {when}\n"
        "    then:\n"
        f"      - create-task: {{id: a, code: c, due: {{business_days: 1}}{task}}}\n"
    )


def _transition(
    kind: K = K.DISCHARGE,
    occurred_at: datetime = THURSDAY_3PM,
    focus: str = "Encounter/e1",
    **facts: Any,
) -> Transition:
    return Transition(
        kind=kind,
        patient="Patient/p1",
        focus=focus,
        encounter="Encounter/e1",
        occurred_at=occurred_at,
        facts=facts,
    )


def _ctx(**kwargs: Any) -> PlanContext:
    kwargs.setdefault("now", NOW)
    return PlanContext(**kwargs)


def _only_task(plan: Plan) -> CreateTask:
    (action,) = plan.actions
    assert isinstance(action, CreateTask)
    return action


# --- max_event_age -------------------------------------------------------------------------


def test_old_transitions_create_no_work(tmp_path: Path) -> None:
    """Older than max_event_age: no actions, and a note saying why."""
    pack = _pack(tmp_path, _task_rule())
    old = _transition(occurred_at=NOW - timedelta(days=8))
    plan = pack.plan(old, _ctx(max_event_age=timedelta(days=7)))
    assert plan.actions == ()
    assert plan.note == "older than engine.max_event_age (7d): journalled, no work created"
    assert plan.transition == old


def test_transitions_within_max_event_age_act(tmp_path: Path) -> None:
    """Exactly at the limit still acts; None means no limit."""
    pack = _pack(tmp_path, _task_rule())
    at_limit = _transition(occurred_at=NOW - timedelta(hours=36))
    assert pack.plan(at_limit, _ctx(max_event_age=timedelta(hours=36))).actions
    ancient = _transition(occurred_at=NOW - timedelta(days=400))
    assert pack.plan(ancient, _ctx(max_event_age=None)).actions
    assert "1d12h" in pack.plan(ancient, _ctx(max_event_age=timedelta(hours=36))).note


@pytest.mark.parametrize("kind", sorted(TIMER_KINDS))
def test_timer_transitions_act_however_old(tmp_path: Path, kind: K) -> None:
    """Timer transitions (overdue, failed, closed, completed) always act."""
    pack = _pack(tmp_path, _task_rule(when=f"{{kind: {kind.value}}}"))
    old = _transition(kind=kind, occurred_at=NOW - timedelta(days=90))
    assert len(pack.plan(old, _ctx(max_event_age=timedelta(days=1))).actions) == 1


def test_timer_kinds_are_the_documented_ones() -> None:
    """The set of timer kinds is exactly the seven the engine's own timers raise."""
    assert {k.value for k in TIMER_KINDS} == {
        "task-overdue",
        "task-failed",
        "task-completed",
        "referral-overdue",
        "referral-closed",
        "careplan-review-due",
        "careplan-done",
    }


# --- owners --------------------------------------------------------------------------------

OWNERS = ", owner: [{care_team_role: case-manager}, general-practitioner, default]"
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "generalPractitioner": [{"display": "no reference"}, {"reference": "Practitioner/gp"}],
}


@pytest.mark.parametrize(
    ("care_team", "patient", "default_owner", "expected"),
    [
        # the care team's case manager comes first
        (
            [("nurse", "Practitioner/n"), ("case-manager", "Practitioner/cm")],
            PATIENT,
            "Organization/d",
            ("Practitioner/cm", "care-team:case-manager"),
        ),
        # no case manager: the general practitioner (first one with a reference)
        (
            [("nurse", "Practitioner/n")],
            PATIENT,
            "Organization/d",
            ("Practitioner/gp", "general-practitioner"),
        ),
        # no GP either: the default owner
        ([], {"resourceType": "Patient"}, "Organization/d", ("Organization/d", "default")),
        # nothing at all
        ([], None, None, (None, "none")),
    ],
)
def test_owner_resolution_order(
    tmp_path: Path,
    care_team: list[tuple[str, str]],
    patient: Mapping[str, Any] | None,
    default_owner: str | None,
    expected: tuple[str | None, str],
) -> None:
    """The first listed source that yields a reference owns the Task, and is recorded."""
    pack = _pack(tmp_path, _task_rule(task=OWNERS))
    ctx = _ctx(care_team=care_team, patient=patient, default_owner=default_owner)
    task = _only_task(pack.plan(_transition(), ctx))
    assert (task.owner, task.owner_source) == expected


def test_default_owner_falls_back_to_the_pack_defaults(tmp_path: Path) -> None:
    """The context's default owner wins; without one, the pack's defaults.default_owner."""
    pack = _pack(tmp_path, _task_rule(), defaults="{default_owner: Organization/pack}")
    assert _only_task(pack.plan(_transition(), _ctx())).owner == "Organization/pack"
    ctx = _ctx(default_owner="Organization/config")
    assert _only_task(pack.plan(_transition(), ctx)).owner == "Organization/config"


def test_fixed_reference_owner(tmp_path: Path) -> None:
    """`{reference: ...}` always yields, so sources after it are never reached."""
    pack = _pack(tmp_path, _task_rule(task=", owner: [{reference: Organization/x}, default]"))
    task = _only_task(pack.plan(_transition(), _ctx(default_owner="Organization/d")))
    assert (task.owner, task.owner_source) == ("Organization/x", "reference")


# --- identifiers and duplicates ------------------------------------------------------------


def test_identifier_is_deterministic(tmp_path: Path) -> None:
    """Same transition, same identifier, whatever the clock, facts or context."""
    pack = _pack(tmp_path, _task_rule(rule_id="rule-1"))
    first = _only_task(pack.plan(_transition(), _ctx()))
    again = _only_task(
        pack.plan(
            _transition(extra="ignored"),
            _ctx(now=NOW + timedelta(hours=3), default_owner="Organization/z"),
        )
    )
    expected = hashlib.sha256(b"rule-1|a|discharge|Encounter/e1").hexdigest()[:32]
    assert first.identifier == again.identifier == expected
    assert task_identifier("rule-1", "a", "discharge|Encounter/e1") == expected
    assert first.transition_key == "discharge|Encounter/e1"


def test_identifier_differs_per_focus_discriminator_and_rule(tmp_path: Path) -> None:
    """Another focus, discriminator, rule or action gives another identifier."""
    pack = _pack(tmp_path, _task_rule("one") + _task_rule("two"))
    plan = pack.plan(_transition(), _ctx())
    one, two = (a for a in plan.actions if isinstance(a, CreateTask))
    assert one.identifier != two.identifier
    other = _only_task(
        _pack(tmp_path, _task_rule("one")).plan(_transition(focus="Encounter/e2"), _ctx())
    )
    assert other.identifier != one.identifier
    split = Transition(
        kind=K.DISCHARGE,
        patient="Patient/p1",
        focus="Encounter/e1",
        discriminator="2",
        occurred_at=THURSDAY_3PM,
    )
    assert (
        _only_task(_pack(tmp_path, _task_rule("one")).plan(split, _ctx())).identifier
        != one.identifier
    )


def test_all_matching_rules_contribute_in_file_order(tmp_path: Path) -> None:
    """Every matching rule adds its actions, in the order of the file; the note names them."""
    rules = _task_rule("first") + _task_rule("skipped", when="{kind: death}") + _task_rule("second")
    plan = _pack(tmp_path, rules).plan(_transition(), _ctx())
    assert [a.rule_id for a in plan.actions] == ["first", "second"]
    assert plan.note == "rules: first, second"


def test_identical_actions_are_kept_once(tmp_path: Path) -> None:
    """Two rules cancelling the same Tasks produce one cancel action (the first rule's)."""
    cancel = "    then:\n      - cancel-tasks: {scope: patient, reason: gone}\n"
    rules = "".join(f"  - id: {rule_id}\n    when: {{kind: death}}\n{cancel}" for rule_id in "ab")
    plan = _pack(tmp_path, rules).plan(_transition(kind=K.DEATH), _ctx())
    (action,) = plan.actions
    assert isinstance(action, CancelTasks)
    assert action.rule_id == "a"


# --- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("risk", "matches_high", "matches_not_high"),
    [
        ({"lace": "high"}, True, False),
        ({"LACE": "High"}, True, False),  # names and tiers compare case-insensitively
        ({"lace": "low"}, False, True),
        ({}, False, True),  # not computed: tier "unknown"
        ({"hospital": "high"}, False, True),  # another score says nothing about LACE
    ],
)
def test_risk_tier_conditions(
    tmp_path: Path, risk: dict[str, str], matches_high: bool, matches_not_high: bool
) -> None:
    """`risk.lace.tier: [high]` and `{not: [high]}` read the context's tiers; unknown is a tier."""
    rules = _task_rule("high", when="{kind: discharge, risk.lace.tier: [high]}") + _task_rule(
        "not-high", when="{kind: discharge, risk.lace.tier: {not: [high]}}"
    )
    plan = _pack(tmp_path, rules).plan(_transition(), _ctx(risk=risk))
    fired = {a.rule_id for a in plan.actions}
    assert ("high" in fired, "not-high" in fired) == (matches_high, matches_not_high)


def test_unknown_tier_can_be_named(tmp_path: Path) -> None:
    """A rule may target patients whose score was not computed."""
    pack = _pack(tmp_path, _task_rule(when="{kind: discharge, risk.hospital.tier: [unknown]}"))
    assert pack.plan(_transition(), _ctx(risk={"lace": "high"})).actions
    assert not pack.plan(_transition(), _ctx(risk={"hospital": "low"})).actions


@pytest.mark.parametrize(
    ("birth_date", "matches"),
    [
        ("1961-03-05", True),  # 65 on the day of the discharge
        ("1961-03-06", False),  # 65 tomorrow
        ("1961", True),  # a year only counts from 1 January
        ("1961-04", False),  # a month only counts from the 1st: 64 on 5 March 2026
        (None, False),  # no birthDate: an age condition does not hold
    ],
)
def test_age_condition(tmp_path: Path, birth_date: str | None, matches: bool) -> None:
    """Age is in whole years on the local date of the transition, bounds inclusive."""
    pack = _pack(tmp_path, _task_rule(when="{kind: discharge, age: {min: 65}}"))
    patient = {"resourceType": "Patient"} | ({"birthDate": birth_date} if birth_date else {})
    assert bool(pack.plan(_transition(), _ctx(patient=patient)).actions) is matches


def test_facts_conditions_compare_as_text(tmp_path: Path) -> None:
    """`facts:` tests any transition fact; booleans and numbers compare as YAML writes them."""
    pack = _pack(
        tmp_path,
        _task_rule(
            when="{kind: discharge, facts: {planned: [true], stays: [2, 3], ward: {not: [icu]}}}"
        ),
    )
    assert pack.plan(_transition(planned=True, stays=3), _ctx()).actions
    assert pack.plan(_transition(planned=True, stays=2, ward="med"), _ctx()).actions
    assert not pack.plan(_transition(planned=True, stays=2, ward="icu"), _ctx()).actions
    assert not pack.plan(_transition(planned=False, stays=2), _ctx()).actions
    assert not pack.plan(_transition(stays=2), _ctx()).actions  # missing fact: no match


def test_encounter_class_disposition_and_service_provider(tmp_path: Path) -> None:
    """Raw-code, class and provider conditions read the detector's facts."""
    when = (
        "{kind: discharge, encounter_class: [IMP], disposition: [home, '01'], "
        "service_provider: [Organization/h1]}"
    )
    pack = _pack(tmp_path, _task_rule(when=when))
    good: dict[str, Any] = {
        "encounter_class": "IMP",
        "disposition_code": "01",
        "service_provider": "Organization/h1",
    }
    assert pack.plan(_transition(**good), _ctx()).actions
    for key, bad in [
        ("encounter_class", "AMB"),
        ("disposition_code", "snf"),
        ("service_provider", "Organization/h2"),
    ]:
        assert not pack.plan(_transition(**(good | {key: bad})), _ctx()).actions, key


def test_disposition_group_is_derived_when_the_detector_did_not_set_it(tmp_path: Path) -> None:
    """Without a disposition_group fact the group comes from system + code; a set fact wins."""
    pack = _pack(tmp_path, _task_rule(when="{kind: discharge, disposition_group: [hospice]}"))
    nubc = "http://terminology.hl7.org/CodeSystem/nubc-UB92"
    assert pack.plan(_transition(disposition_system=nubc, disposition_code="51"), _ctx()).actions
    overridden = _transition(
        disposition_system=nubc, disposition_code="51", disposition_group="transfer"
    )
    assert not pack.plan(overridden, _ctx()).actions
    # a detector wired without a table says "unknown" for everything: the rules look again
    ungrouped = _transition(
        disposition_system=nubc, disposition_code="51", disposition_group="unknown"
    )
    assert pack.plan(ungrouped, _ctx()).actions


# --- due dates and calendars ---------------------------------------------------------------


def test_due_dates_use_the_pack_calendar_unless_the_context_has_one(tmp_path: Path) -> None:
    """The pack's time zone and holidays apply by default; a context calendar replaces them."""
    pack = _pack(
        tmp_path,
        _task_rule(),
        defaults="{timezone: America/New_York, holidays: [2026-03-06]}",
    )
    # 03:30 UTC Friday = Thursday 22:30 in New York; + 1 business day skips the Friday holiday.
    late = _transition(occurred_at=datetime(2026, 3, 6, 3, 30, tzinfo=UTC))
    assert _only_task(pack.plan(late, _ctx(now=late.occurred_at))).due == date(2026, 3, 9)
    utc = _ctx(now=late.occurred_at, calendar=BusinessCalendar())
    assert _only_task(pack.plan(late, utc)).due == date(2026, 3, 9)  # Friday + 1 = Monday
    ctx = _ctx(now=late.occurred_at, calendar=BusinessCalendar(tz="America/New_York"))
    assert _only_task(pack.plan(late, ctx)).due == date(2026, 3, 6)  # Thursday + 1, no holiday


def test_priority_and_description_defaults(tmp_path: Path) -> None:
    """create-task defaults to routine, escalate to urgent; the description to the display."""
    rules = (
        "  - id: r\n    when: {kind: task-overdue}\n    then:\n"
        "      - create-task: {id: a, code: c, due: {days: 0}}\n"
        "      - escalate: {id: b, code: c, due: {days: 0}, careplan: false}\n"
    )
    plan = _pack(tmp_path, rules).plan(_transition(kind=K.TASK_OVERDUE), _ctx())
    task, escalation = plan.actions
    assert isinstance(task, CreateTask)
    assert isinstance(escalation, CreateTask)
    assert (task.priority, task.escalation, task.description) == ("routine", False, "Do it")
    assert (escalation.priority, escalation.escalation) == ("urgent", True)
    assert not escalation.add_to_careplan
    assert task.due == THURSDAY_3PM.date()


def test_plan_context_is_frozen() -> None:
    """PlanContext is a value: it cannot be changed after it is built."""
    ctx = _ctx()
    with pytest.raises(AttributeError):
        ctx.now = NOW  # type: ignore[misc]
