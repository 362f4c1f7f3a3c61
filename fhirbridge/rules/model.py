"""The rule-pack format: what a ``mappings/*.yaml`` rule file may say, checked at load time.

A rule pack is YAML. Every mapping rejects keys it does not know; every error names the file,
the line, the rule and the key (see :mod:`fhirbridge.rules.loader`).

Reference::

    version: 1                              # required; the only version so far

    defaults:                               # optional; the engine's configuration overrides
      timezone: America/New_York            #   IANA zone deciding the local date of an event
      weekend: [sat, sun]                   #   day names (mon..sun) or numbers (0 = Monday)
      holidays: [2026-12-25, 2027-01-01]    #   dates that are not business days
      default_owner: Organization/care-coordination   # owner when no other source yields one
      coverage_ending_days: 30              #   a Coverage ending within N days of the event
                                            #   counts as "ending" (case: {coverage: ...})
      review_interval_days: {high: 7, moderate: 14, low: 30, unknown: 30}
                                            #   care-plan review interval by latest risk tier
      engagement_noshows: 2                 #   this many no-shows within the window
      engagement_window_days: 90            #   make the engagement "lapsed"
      social_need_lookback_days: 90         #   screenings a discharge still refers
      options: {med-reconciliation: all}    #   pack options rules test (options: {...});
                                            #   med-reconciliation: all | high-risk

    codes:                                  # the engine's Task codes, system
      tcm-contact:                          #   https://fhirbridge.dev/fhir/CodeSystem/task-code
        display: Interactive contact within 2 business days
        definition: ...                     #   optional

    rules:
      - id: discharge-community             # unique over every loaded pack; [A-Za-z0-9._-]
        description: ...                    # optional
        when:                               # every condition given must hold
          kind: discharge                   # required: a transition kind, or a list of them
          encounter_class: [IMP, ACUTE]     # facts.encounter_class is any of these
          disposition_group: [community]    # community | post-acute | transfer | hospice |
                                            #   against-advice | death | unknown
          disposition: [home, "01"]         # facts.disposition_code, the raw code
          service_provider: [Organization/1]  # facts.service_provider
          age: {min: 18, max: 120}          # patient age in whole years on the event's date;
                                            #   no birthDate: the condition does not hold
          risk.lace.tier: [high]            # the context's risk tier for score "lace";
                                            #   a score not computed has tier "unknown"
          facts: {outcome: [completed]}     # any transition fact, compared as text
          case: {coverage: [none, ending]}  # facts the engine looks up when planning:
                                            #   careplan: active | completed | ... | none
                                            #     (the patient's transitional-care CarePlan)
                                            #   coverage: active | ending | inactive | none
                                            #   referred: true | false (the social need
                                            #     has an open referral already)
                                            #   engagement: lapsed | engaged (no-shows)
          options: {med-reconciliation: [all]}  # the pack's defaults.options
        then:                               # one or more actions, in order
          - create-task:
              id: contact                   # unique within the rule; part of the identifier
              code: tcm-contact             # must be listed under codes (in any loaded pack)
              description: ...              # optional; default: the code's display
              due: {business_days: 2}       # or {days: 14}, or {fact: due, default_days: 30}
                                            #   (or default_business_days); counted from the
                                            #   local date of the transition
              priority: routine             # routine | urgent | asap | stat (default routine)
              owner:                        # the first source that yields a reference wins:
                - {care_team_role: case-manager}  # first active care-team member in that role
                - general-practitioner      #   Patient.generalPractitioner
                - {reference: Organization/x}  # a fixed reference
                - default                   #   the default owner
              careplan: true                # also add it to the patient's CarePlan (default)
              focus: transition             # the Task's focus: the transition's focus
                                            #   (default) or the patient
              once_per: engagement_window   # optional: one Task per value of this looked-up
                                            #   fact (not per transition)
          - escalate: {...}                 # a create-task marked as an escalation;
                                            #   priority defaults to urgent
          - cancel-tasks:                   # cancel the engine's open Tasks
              scope: patient                #   patient | encounter | focus (required;
                                            #   focus: Tasks whose focus is the transition's)
              status: cancelled             #   cancelled | entered-in-error (default cancelled)
              reason: patient deceased      #   required
          - complete-tasks:                 # complete the engine's open Tasks whose focus is
              reason: referral completed    #   the transition's focus
              focus: transition             #   or: patient (Tasks focused on the patient)
              code: coverage-review         #   optional: only Tasks with this code
          - create-referral:                # refer social needs to community resources:
              id: refer                     #   a social-need transition's need, or (other
              due: {business_days: 10}      #   kinds: a discharge) each unreferred need on
                                            #   record; a ServiceRequest per need, tracked
                                            #   like any referral (referral-placed)
              performer: [{reference: Organization/food-bank}]   # optional owner sources
          - complete-careplan:              # set the transitional-care CarePlan completed
              reason: all activities done

Every list condition also takes a single value (``kind: discharge``) or a negation
(``risk.lace.tier: {not: [high]}``), which holds when the value is absent too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    model_validator,
)

from fhirbridge._yaml import one_of
from fhirbridge.rules.calendar import BusinessCalendar, parse_weekdays
from fhirbridge.rules.dispositions import GROUPS
from fhirbridge.values import TransitionKind

__all__ = [
    "KINDS",
    "PRIORITIES",
    "CASE_FACTS",
    "OPTIONS",
    "Age",
    "CancelSpec",
    "CarePlanSpec",
    "CodeSpec",
    "CompleteSpec",
    "Defaults",
    "Due",
    "Match",
    "OwnerSource",
    "ReferralSpec",
    "Rule",
    "RuleFile",
    "TaskSpec",
    "ThenItem",
    "When",
    "yaml_loc",
]

#: Transition kinds a rule may name.
KINDS: tuple[str, ...] = tuple(kind.value for kind in TransitionKind)
#: FHIR Task.priority codes.
PRIORITIES: tuple[str, ...] = ("routine", "urgent", "asap", "stat")

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RISK_KEY = re.compile(r"^risk\.([A-Za-z0-9_-]+)\.tier$")


def _ident(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{value!r} is not an id (letters, digits, '.', '_', '-')")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
NonNegative = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]

#: Facts the engine looks up when planning, that ``case:`` conditions may test.
CASE_FACTS: tuple[str, ...] = ("careplan", "coverage", "referred", "engagement")
#: Pack options (``defaults.options``) and the values each may take.
OPTIONS: Mapping[str, tuple[str, ...]] = {"med-reconciliation": ("all", "high-risk")}
#: Risk tiers a review interval may name (``unknown``: no score computed).
REVIEW_TIERS: tuple[str, ...] = ("high", "moderate", "intermediate", "low", "unknown")
CaseFact = Annotated[str, AfterValidator(one_of(CASE_FACTS))]
OptionName = Annotated[str, AfterValidator(one_of(tuple(OPTIONS)))]
ReviewTier = Annotated[str, AfterValidator(one_of(REVIEW_TIERS))]


def _text(value: object) -> str:
    """Compare YAML scalars and fact values as text (``true``, ``3``, ``IMP``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class Match:
    """A list condition: the value is one of ``values`` (or, ``negate``: is not)."""

    values: tuple[str, ...]
    negate: bool = False

    def test(self, value: object) -> bool:
        """Whether ``value`` (None when absent) satisfies the condition."""
        if value is None:
            return self.negate
        return (_text(value) in self.values) != self.negate


def _parse_match(allowed: Sequence[str] | None, fold: bool) -> Callable[[Any], Match]:
    def parse(raw: Any) -> Match:
        negate = False
        if isinstance(raw, Mapping):
            if set(raw) != {"not"}:
                extra = ", ".join(repr(k) for k in raw if k != "not") or "nothing"
                raise ValueError(f"expected a list or {{not: [...]}}, got {extra} as key")
            raw = raw["not"]
            negate = True
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise ValueError("the list is empty")
        values: list[str] = []
        for item in items:
            if item is None or isinstance(item, Mapping | list):
                raise ValueError(f"{item!r} is not a value")
            text = _text(item).lower() if fold else _text(item)
            if allowed is not None and text not in allowed:
                raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
            values.append(text)
        return Match(values=tuple(values), negate=negate)

    return parse


AnyMatch = Annotated[Match, PlainValidator(_parse_match(None, fold=False))]
KindMatch = Annotated[Match, PlainValidator(_parse_match(KINDS, fold=False))]
GroupMatch = Annotated[Match, PlainValidator(_parse_match(GROUPS, fold=False))]
TierMatch = Annotated[Match, PlainValidator(_parse_match(None, fold=True))]


@dataclass(frozen=True, slots=True)
class OwnerSource:
    """One place to look for a Task owner.

    ``kind`` is ``care-team`` (``value`` = role code), ``general-practitioner``, ``default``
    or ``reference`` (``value`` = the reference itself).
    """

    kind: Literal["care-team", "general-practitioner", "default", "reference"]
    value: str = ""


def _parse_owner(raw: Any) -> OwnerSource:
    if raw == "general-practitioner":
        return OwnerSource("general-practitioner")
    if raw == "default":
        return OwnerSource("default")
    expected = "general-practitioner, default, {care_team_role: ROLE} or {reference: Type/id}"
    if isinstance(raw, Mapping) and len(raw) == 1:
        key, value = next(iter(raw.items()))
        if key in {"care_team_role", "reference"}:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{key} needs a non-empty text, got {value!r}")
            if key == "care_team_role":
                return OwnerSource("care-team", value.strip())
            return OwnerSource("reference", value.strip())
    raise ValueError(f"{raw!r} is not an owner source ({expected})")


Owner = Annotated[OwnerSource, PlainValidator(_parse_owner)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeSpec(_Strict):
    """One engine Task code."""

    display: Annotated[str, Field(min_length=1)]
    definition: str = ""


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone") from None
    return value


def _weekdays(raw: Any) -> Any:
    if isinstance(raw, list):
        return tuple(sorted(parse_weekdays(raw)))
    return raw


class Defaults(_Strict):
    """Pack-level defaults; the engine's configuration overrides each one it sets."""

    timezone: Annotated[str, AfterValidator(_timezone)] | None = None
    weekend: Annotated[tuple[int, ...], BeforeValidator(_weekdays)] | None = None
    holidays: tuple[date, ...] | None = None
    default_owner: str | None = None
    coverage_ending_days: NonNegative | None = None
    review_interval_days: dict[ReviewTier, Positive] | None = None
    engagement_noshows: Positive | None = None
    engagement_window_days: Positive | None = None
    social_need_lookback_days: NonNegative | None = None
    options: dict[OptionName, str] | None = None

    @model_validator(mode="after")
    def _some_business_day(self) -> Defaults:
        if self.weekend is not None and len(set(self.weekend)) >= 7:
            raise ValueError("weekend: the weekend cannot cover the whole week")
        for name, value in (self.options or {}).items():
            if value not in OPTIONS[name]:
                raise ValueError(
                    f"options: {name} is {value!r}, not one of {', '.join(OPTIONS[name])}"
                )
        return self

    def option(self, name: str) -> str:
        """A pack option's value; an option not set takes its first allowed value."""
        return (self.options or {}).get(name) or OPTIONS[name][0]

    def merged(self, later: Defaults) -> Defaults:
        """These defaults with every key that ``later`` sets taken from ``later``."""
        return self.model_copy(update=later.model_dump(exclude_none=True))

    def calendar(self) -> BusinessCalendar:
        """The business calendar these defaults describe (UTC, Saturday and Sunday off)."""
        return BusinessCalendar(
            tz=self.timezone or "UTC",
            weekend=frozenset(self.weekend) if self.weekend is not None else frozenset({5, 6}),
            holidays=frozenset(self.holidays or ()),
        )


class Age(_Strict):
    """Patient age bounds in whole years, both inclusive."""

    min: NonNegative | None = None
    max: NonNegative | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Age:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def test(self, age: int | None) -> bool:
        """Whether ``age`` (None when unknown) lies within the bounds."""
        if age is None:
            return False
        if self.min is not None and age < self.min:
            return False
        return self.max is None or age <= self.max


class When(_Strict):
    """The conditions of a rule; all that are given must hold."""

    kind: KindMatch
    encounter_class: AnyMatch | None = None
    disposition_group: GroupMatch | None = None
    disposition: AnyMatch | None = None
    service_provider: AnyMatch | None = None
    age: Age | None = None
    risk: dict[Annotated[str, AfterValidator(_ident)], TierMatch] = Field(default_factory=dict)
    facts: dict[str, AnyMatch] = Field(default_factory=dict)
    case: dict[CaseFact, AnyMatch] = Field(default_factory=dict)
    options: dict[OptionName, AnyMatch] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_risk(cls, data: Any) -> Any:
        """Move ``risk.<score>.tier`` keys into ``risk``; a bare ``risk`` key is not the format."""
        if not isinstance(data, Mapping):
            return data
        if "risk" in data:
            raise ValueError("unknown key 'risk' (write risk.<score>.tier: [...])")
        out: dict[str, Any] = {}
        risk: dict[str, Any] = {}
        for key, value in data.items():
            found = _RISK_KEY.match(key) if isinstance(key, str) else None
            if found:
                risk[found.group(1)] = value
            else:
                out[key] = value
        if risk:
            out["risk"] = risk
        return out


class Due(_Strict):
    """When a Task is due, counted from the local date of the transition."""

    business_days: NonNegative | None = None
    days: NonNegative | None = None
    fact: str | None = None
    default_days: NonNegative | None = None
    default_business_days: NonNegative | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Due:
        given = [k for k in ("business_days", "days", "fact") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of business_days, days, fact")
        defaults = [
            k for k in ("default_days", "default_business_days") if getattr(self, k) is not None
        ]
        if self.fact is not None and len(defaults) != 1:
            raise ValueError("fact needs exactly one of default_days, default_business_days")
        if self.fact is None and defaults:
            raise ValueError(f"{defaults[0]} only goes with fact")
        return self


class TaskSpec(_Strict):
    """A Task to create (``create-task``) or an escalation Task (``escalate``)."""

    id: Ident
    code: Ident
    description: str | None = None
    due: Due
    priority: Annotated[str, AfterValidator(one_of(PRIORITIES))] | None = None
    owner: tuple[Owner, ...] = Field(default=(OwnerSource("default"),), min_length=1)
    careplan: StrictBool = True
    focus: Literal["transition", "patient"] = "transition"
    once_per: Annotated[str, AfterValidator(_ident)] | None = None


class CancelSpec(_Strict):
    """Cancel the engine's open Tasks of the patient or of the transition's encounter."""

    scope: Literal["patient", "encounter", "focus"]
    status: Literal["cancelled", "entered-in-error"] = "cancelled"
    reason: Annotated[str, Field(min_length=1)]


class CompleteSpec(_Strict):
    """Complete the engine's open Tasks whose focus is the transition's focus (or the
    patient), optionally only those with one engine Task code."""

    reason: Annotated[str, Field(min_length=1)]
    focus: Literal["transition", "patient"] = "transition"
    code: Ident | None = None


class ReferralSpec(_Strict):
    """Refer a social need to a community resource (a ServiceRequest the engine writes)."""

    id: Ident
    due: Due
    priority: Annotated[str, AfterValidator(one_of(PRIORITIES))] | None = None
    performer: tuple[Owner, ...] = ()


class CarePlanSpec(_Strict):
    """Set the patient's transitional-care CarePlan to completed."""

    reason: Annotated[str, Field(min_length=1)]


_ACTIONS = (
    "create-task",
    "escalate",
    "cancel-tasks",
    "complete-tasks",
    "create-referral",
    "complete-careplan",
)


class ThenItem(_Strict):
    """One action: a mapping with exactly one of the action keys."""

    create_task: TaskSpec | None = Field(default=None, alias="create-task")
    escalate: TaskSpec | None = None
    cancel_tasks: CancelSpec | None = Field(default=None, alias="cancel-tasks")
    complete_tasks: CompleteSpec | None = Field(default=None, alias="complete-tasks")
    create_referral: ReferralSpec | None = Field(default=None, alias="create-referral")
    complete_careplan: CarePlanSpec | None = Field(default=None, alias="complete-careplan")

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = [k for k in data if k in _ACTIONS]
            if not data:
                raise ValueError(f"an action needs one of {', '.join(_ACTIONS)}")
            if len(known) > 1:
                raise ValueError(f"one action per item, got {', '.join(known)}")
        return data

    @property
    def task(self) -> TaskSpec | None:
        """The Task this item creates, if it creates one."""
        return self.create_task or self.escalate


class Rule(_Strict):
    """``when`` the transition matches, ``then`` plan these actions."""

    id: Ident
    description: str = ""
    when: When
    then: tuple[ThenItem, ...] = Field(min_length=1)


class RuleFile(_Strict):
    """One rule-pack file."""

    version: Literal[1]
    defaults: Defaults = Field(default_factory=Defaults)
    codes: dict[Annotated[str, AfterValidator(_ident)], CodeSpec] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()


def yaml_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Map a validation location back to the YAML's keys (``risk, lace`` -> ``risk.lace.tier``)."""
    out: list[str | int] = []
    index = 0
    while index < len(loc):
        part = loc[index]
        if (
            part == "risk"
            and out
            and out[-1] == "when"
            and index + 1 < len(loc)
            and isinstance(loc[index + 1], str)
        ):
            out.append(f"risk.{loc[index + 1]}.tier")
            index += 2
            continue
        out.append(part)
        index += 1
    return tuple(out)
