"""Rule evaluation: a transition and its context in, a :class:`~fhirbridge.values.Plan` out.

Pure: nothing here reads the clock, the network or a file. Every rule whose ``when`` holds
contributes its actions, in file order; an action planned twice (same Task identifier, or the
same cancel/complete) is kept once. Each Task's identifier is a hash of the rule id, the
action id and the transition's key, so the same transition plans the same Tasks forever and
the writeback's conditional create never makes a second one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fhirbridge import identity
from fhirbridge._fhirjson import local_date
from fhirbridge.rules._compiled import CompiledRule, Known, compile_pack
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.rules.dispositions import DispositionTable, default_table
from fhirbridge.rules.model import (
    Defaults,
    Due,
    OwnerSource,
    ReferralSpec,
    Rule,
    TaskSpec,
    ThenItem,
    _text,
)
from fhirbridge.values import (
    ENGINE_SYSTEM,
    Action,
    CancelTasks,
    CompleteCarePlan,
    CompleteTasks,
    CreateReferral,
    CreateTask,
    Plan,
    Transition,
    TransitionKind,
    parse_instant,
)

__all__ = [
    "TASK_CODE_SYSTEM",
    "TIMER_KINDS",
    "PlanContext",
    "RulePack",
    "task_identifier",
]

#: The CodeSystem of the engine's Task codes (``codes:`` in a rule pack).
TASK_CODE_SYSTEM = f"{ENGINE_SYSTEM}/CodeSystem/task-code"

#: Transitions the engine's own timers raise: they always act, however old.
TIMER_KINDS: frozenset[TransitionKind] = frozenset(
    {
        TransitionKind.TASK_OVERDUE,
        TransitionKind.TASK_FAILED,
        TransitionKind.TASK_COMPLETED,
        TransitionKind.REFERRAL_OVERDUE,
        TransitionKind.REFERRAL_CLOSED,
        TransitionKind.CAREPLAN_REVIEW_DUE,
        TransitionKind.CAREPLAN_DONE,
    }
)


def task_identifier(rule_id: str, action_id: str, transition_key: str) -> str:
    """The deterministic identifier value of a planned Task (32 hex characters)."""
    return identity.task_identifier(rule_id, action_id, transition_key)


@dataclass(frozen=True, slots=True)
class PlanContext:
    """What rules may know beyond the transition itself, gathered by the caller.

    - ``now``: the engine's clock reading, for ``max_event_age``.
    - ``calendar``: business days and time zone; None takes the pack's ``defaults``.
    - ``max_event_age``: older non-timer transitions are journalled but create no work;
      None means no limit.
    - ``patient``: the Patient JSON (``birthDate``, ``generalPractitioner``).
    - ``care_team``: ``(role code, member reference)`` from the patient's active CareTeams,
      in the order owners are preferred.
    - ``default_owner``: None takes the pack's ``defaults.default_owner``.
    - ``risk``: score name to tier, e.g. ``{"lace": "high"}``.
    - ``case``: what the engine looked up for case management (``careplan``, ``coverage``,
      ``referred``, ``engagement``, ``engagement_window``...; see
      :mod:`fhirbridge.casemgmt`), tested by ``case:`` conditions.
    """

    now: datetime
    calendar: BusinessCalendar | None = None
    max_event_age: timedelta | None = timedelta(days=7)
    patient: Mapping[str, Any] | None = None
    care_team: Sequence[tuple[str, str]] = ()
    default_owner: str | None = None
    risk: Mapping[str, str] = field(default_factory=dict)
    case: Mapping[str, Any] = field(default_factory=dict)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _format_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return "".join(parts) or f"{seconds}s"


def _birth_date(patient: Mapping[str, Any] | None) -> date | None:
    raw = patient.get("birthDate") if patient else None
    if not isinstance(raw, str):
        return None
    parsed = parse_instant(raw)  # "1950" and "1950-03" become the first of the period
    return parsed.date() if parsed else None


def _age_on(born: date | None, day: date) -> int | None:
    if born is None:
        return None
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the conditions of one evaluation read, worked out once."""

    transition: Transition
    day: date
    age: int | None
    disposition_group: str
    risk: Mapping[str, str]
    case: Mapping[str, Any] = field(default_factory=dict)
    options: Defaults = field(default_factory=Defaults)

    def fact(self, name: str) -> Any:
        return self.transition.facts.get(name)


def _fact_date(value: Any, calendar: BusinessCalendar) -> date | None:
    if isinstance(value, datetime):
        return calendar.local_date(value)
    if isinstance(value, date):
        return value
    return local_date(value, calendar.zone)


def _due(due: Due, facts: _Facts, calendar: BusinessCalendar) -> date:
    if due.business_days is not None:
        return calendar.add_business_days(facts.day, due.business_days)
    if due.days is not None:
        return calendar.add_days(facts.day, due.days)
    assert due.fact is not None  # Due's validator allows exactly one of the three
    found = _fact_date(facts.fact(due.fact), calendar)
    if found is not None:
        return found
    if due.default_business_days is not None:
        return calendar.add_business_days(facts.day, due.default_business_days)
    return calendar.add_days(facts.day, due.default_days or 0)


@dataclass(frozen=True, slots=True)
class RulePack:
    """Loaded, validated rules with their Task codes and defaults (see :func:`load_rules`).

    ``codes`` maps each engine Task code to its display; ``sources`` names the files.
    """

    rules: tuple[Rule, ...] = ()
    codes: Mapping[str, str] = field(default_factory=dict)
    defaults: Defaults = field(default_factory=Defaults)
    sources: tuple[Path, ...] = ()
    dispositions: DispositionTable | None = None
    #: the rules each transition kind may match, compiled once (:mod:`._compiled`)
    _by_kind: Mapping[TransitionKind, tuple[CompiledRule, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_kind", compile_pack(self.rules))

    def rule(self, rule_id: str) -> Rule:
        """The rule with ``rule_id``; KeyError when there is none."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def calendar(self) -> BusinessCalendar:
        """The business calendar of the pack's defaults."""
        return self.defaults.calendar()

    def plan(self, transition: Transition, ctx: PlanContext) -> Plan:
        """The actions the pack plans for ``transition``, in rule order, without duplicates."""
        calendar = ctx.calendar if ctx.calendar is not None else self.calendar()
        if transition.kind not in TIMER_KINDS and ctx.max_event_age is not None:
            age = _aware(ctx.now) - _aware(transition.occurred_at)
            if age > ctx.max_event_age:
                limit = _format_age(ctx.max_event_age)
                note = f"older than engine.max_event_age ({limit}): journalled, no work created"
                return Plan(transition=transition, note=note)
        facts = self._facts(transition, ctx, calendar)
        default_owner = ctx.default_owner or self.defaults.default_owner
        actions: list[Action] = []
        seen: set[object] = set()
        matched: list[str] = []
        skipped: list[str] = []
        known = Known(
            facts=transition.facts,
            group=facts.disposition_group,
            age=facts.age,
            risk=facts.risk,
            case=facts.case,
            option=facts.options.option,
        )
        for compiled in self._by_kind[transition.kind]:
            if not compiled.holds(known):
                continue
            rule = compiled.rule
            matched.append(rule.id)
            for item in rule.then:
                if item.create_referral is not None:
                    produced: list[Action] = list(
                        self._referrals(rule, item.create_referral, facts, ctx, calendar)
                    )
                else:
                    action = self._action(rule, item, facts, ctx, calendar, default_owner)
                    if action is None:
                        skipped.append(f"{rule.id}: cancel-tasks scope encounter, but no encounter")
                        continue
                    produced = [action]
                for action in produced:
                    key = _dedupe_key(action)
                    if key not in seen:
                        seen.add(key)
                        actions.append(action)
        note = f"rules: {', '.join(matched)}" if matched else "no rule matched"
        looked_up = [
            f"{name}={_text(value)}"
            for name, value in sorted(facts.case.items())
            if value is not None and not isinstance(value, list | dict)
        ]
        needs = facts.case.get("needs")
        if isinstance(needs, list):
            looked_up.append(
                "needs=" + ("+".join(str(n.get("need")) for n in needs) if needs else "none")
            )
        if looked_up:
            note += "; looked up: " + ", ".join(looked_up)
        if skipped:
            note += "; skipped " + "; ".join(skipped)
        return Plan(transition=transition, actions=tuple(actions), note=note)

    def _facts(
        self, transition: Transition, ctx: PlanContext, calendar: BusinessCalendar
    ) -> _Facts:
        day = calendar.local_date(transition.occurred_at)
        group = transition.facts.get("disposition_group")
        if not isinstance(group, str) or group in ("", "unknown"):
            # Not grouped by the detector (or grouped with no table): group it here.
            table = self.dispositions if self.dispositions is not None else default_table()
            group = table.group(
                transition.facts.get("disposition_system"),
                transition.facts.get("disposition_code"),
            )
        risk = {str(k).lower(): str(v).lower() for k, v in ctx.risk.items()}
        return _Facts(
            transition=transition,
            day=day,
            age=_age_on(_birth_date(ctx.patient), day),
            disposition_group=group,
            risk=risk,
            case=ctx.case,
            options=self.defaults,
        )

    def _action(
        self,
        rule: Rule,
        item: ThenItem,
        facts: _Facts,
        ctx: PlanContext,
        calendar: BusinessCalendar,
        default_owner: str | None,
    ) -> Action | None:
        """The action ``item`` plans; None for an encounter-scoped cancel without encounter.

        (An encounter scope must never widen to the whole patient.)
        """
        transition = facts.transition
        if item.cancel_tasks is not None:
            spec = item.cancel_tasks
            encounter = None
            if spec.scope == "encounter":
                encounter = transition.encounter or (
                    transition.focus if transition.focus.startswith("Encounter/") else None
                )
                if encounter is None:
                    return None
            return CancelTasks(
                rule_id=rule.id,
                patient=transition.patient,
                encounter=encounter,
                status=spec.status,
                reason=spec.reason,
                transition_key=transition.key,
                focus=transition.focus if spec.scope == "focus" else None,
            )
        if item.complete_tasks is not None:
            spec_done = item.complete_tasks
            return CompleteTasks(
                rule_id=rule.id,
                focus=transition.patient if spec_done.focus == "patient" else transition.focus,
                reason=spec_done.reason,
                transition_key=transition.key,
                code=spec_done.code,
            )
        if item.complete_careplan is not None:
            return CompleteCarePlan(
                rule_id=rule.id,
                careplan=transition.focus,
                patient=transition.patient,
                reason=item.complete_careplan.reason,
                transition_key=transition.key,
            )
        task = item.task
        assert task is not None  # ThenItem holds exactly one action
        return self._task(
            rule, task, facts, ctx, calendar, default_owner, item.escalate is not None
        )

    def _task(
        self,
        rule: Rule,
        task: TaskSpec,
        facts: _Facts,
        ctx: PlanContext,
        calendar: BusinessCalendar,
        default_owner: str | None,
        escalation: bool,
    ) -> CreateTask:
        transition = facts.transition
        display = self.codes.get(task.code, task.code)
        owner, source = _resolve_owner(task.owner, ctx, default_owner)
        key = transition.key
        per = facts.case.get(task.once_per) if task.once_per else None
        if per is not None:
            # one Task per value of a looked-up fact (e.g. an engagement window), so a
            # second transition in the same window plans the same Task
            key = f"{transition.patient}|{task.once_per}={per}"
        return CreateTask(
            rule_id=rule.id,
            action_id=task.id,
            code=task.code,
            display=display,
            description=task.description or display,
            priority=task.priority or ("urgent" if escalation else "routine"),
            due=_due(task.due, facts, calendar),
            patient=transition.patient,
            focus=transition.patient if task.focus == "patient" else transition.focus,
            encounter=transition.encounter,
            owner=owner,
            owner_source=source,
            identifier=task_identifier(rule.id, task.id, key),
            transition_key=transition.key,
            add_to_careplan=task.careplan,
            escalation=escalation,
        )

    def _referrals(
        self,
        rule: Rule,
        spec: ReferralSpec,
        facts: _Facts,
        ctx: PlanContext,
        calendar: BusinessCalendar,
    ) -> list[CreateReferral]:
        """The referrals of a ``social-need`` transition's need, or, for another transition
        (a discharge), of each unreferred need on record (``case["needs"]``).

        The identifier hashes the patient, the need and the day it was recorded, never the
        rule: the questions of one screening, the Condition recorded from it, and a
        discharge that finds it on record all refer the need once."""
        transition = facts.transition
        if transition.kind is TransitionKind.SOCIAL_NEED:
            needs: list[Mapping[str, Any]] = [
                {**transition.facts, "reason": transition.focus, "recorded": facts.day.isoformat()}
            ]
        else:
            needs = [n for n in facts.case.get("needs") or () if isinstance(n, Mapping)]
        performer = (
            _resolve_owner(spec.performer, ctx, ctx.default_owner or self.defaults.default_owner)[0]
            if spec.performer
            else None
        )
        out: list[CreateReferral] = []
        for found in needs:
            need = str(found.get("need") or "sdoh")
            categories = tuple(
                (str(c[0]), str(c[1]), str(c[2]) if len(c) > 2 else "")
                for c in found.get("need_categories") or ()
            )
            once = f"{transition.patient}|{need}|{found.get('recorded')}"
            out.append(
                CreateReferral(
                    rule_id=rule.id,
                    action_id=spec.id,
                    need=need,
                    display=str(found.get("referral") or f"Refer for {need}"),
                    categories=categories,
                    patient=transition.patient,
                    reason=str(found.get("reason") or transition.focus),
                    encounter=transition.encounter,
                    occurrence=_due(spec.due, facts, calendar),
                    performer=performer,
                    identifier=task_identifier("referral", need, once),
                    transition_key=transition.key,
                )
            )
        return out


def _general_practitioner(patient: Mapping[str, Any] | None) -> str | None:
    for ref in (patient or {}).get("generalPractitioner") or ():
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str) and ref["reference"]:
            return str(ref["reference"])
    return None


def _resolve_owner(
    sources: Sequence[OwnerSource], ctx: PlanContext, default_owner: str | None
) -> tuple[str | None, str]:
    """The first owner source that yields a reference, and which one it was."""
    for source in sources:
        if source.kind == "care-team":
            for role, member in ctx.care_team:
                if role == source.value and member:
                    return member, f"care-team:{role}"
        elif source.kind == "general-practitioner":
            gp = _general_practitioner(ctx.patient)
            if gp:
                return gp, "general-practitioner"
        elif source.kind == "default":
            if default_owner:
                return default_owner, "default"
        else:
            return source.value, "reference"
    return None, "none"


def _dedupe_key(action: Action) -> object:
    if isinstance(action, CreateTask):
        return ("create", action.identifier)
    if isinstance(action, CancelTasks):
        return ("cancel", action.patient, action.encounter, action.focus, action.status)
    if isinstance(action, CompleteTasks):
        return ("complete", action.focus, action.code)
    if isinstance(action, CreateReferral):
        return ("referral", action.identifier)
    return (type(action).__name__, action)
