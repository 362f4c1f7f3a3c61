"""Rule conditions compiled once per pack into plain predicates.

A pack's ``when`` blocks are pydantic models: testing one walks its fields and calls each
``Match`` in turn. :func:`compile_pack` reads them once and gives, for every transition kind,
the rules that can hold for it (in file order), each with a predicate over what one
evaluation knows (:class:`Known`): a tuple of ``(where, name, values, negate)`` tests on
frozensets, and the age bounds. Most rules are for another kind, so most are never looked
at; those that are run a short loop of set lookups. The answers are those of ``Match.test``
and ``Age.test`` (:mod:`fhirbridge.rules.model`), which ``tests/unit/test_rules_compiled.py``
checks against the models on every shipped rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhirbridge.rules.model import Match, Rule, When
from fhirbridge.values import TransitionKind

__all__ = ["CompiledRule", "Known", "compile_pack"]

# where a test reads its value
_FACT, _GROUP, _RISK, _CASE, _OPTION = range(5)

_Test = tuple[int, str, frozenset[str], bool]


@dataclass(frozen=True, slots=True)
class Known:
    """What the conditions of one evaluation read: the transition's facts, its disposition
    group, the patient's age, the risk tiers (lower-cased), the case facts and the pack's
    options (with their defaults)."""

    facts: Mapping[str, Any]
    group: str
    age: int | None
    risk: Mapping[str, str]
    case: Mapping[str, Any]
    option: Any  # Callable[[str], str]: the pack's ``Defaults.option``


def _text(value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule and its conditions, ready to test."""

    rule: Rule
    tests: tuple[_Test, ...]
    age_min: int | None
    age_max: int | None
    has_age: bool

    def holds(self, known: Known) -> bool:
        """Whether every condition of the rule (its kind aside: already chosen) holds."""
        if self.has_age:
            age = known.age
            if age is None:
                return False
            if self.age_min is not None and age < self.age_min:
                return False
            if self.age_max is not None and age > self.age_max:
                return False
        for where, name, values, negate in self.tests:
            if where == _FACT:
                value = known.facts.get(name)
            elif where == _GROUP:
                value = known.group
            elif where == _RISK:
                value = known.risk.get(name, "unknown")
            elif where == _CASE:
                value = known.case.get(name)
            else:
                value = known.option(name)
            if value is None:
                if not negate:
                    return False
            elif (_text(value) in values) == negate:
                return False
        return True


def _test(where: int, name: str, match: Match) -> _Test:
    return (where, name, frozenset(match.values), match.negate)


def compile_when(rule: Rule) -> CompiledRule:
    """The predicate of ``rule.when`` (every condition but ``kind``)."""
    when: When = rule.when
    tests: list[_Test] = []
    for name, match in (
        ("encounter_class", when.encounter_class),
        ("disposition_code", when.disposition),
        ("service_provider", when.service_provider),
    ):
        if match is not None:
            tests.append(_test(_FACT, name, match))
    if when.disposition_group is not None:
        tests.append(_test(_GROUP, "", when.disposition_group))
    tests += [_test(_RISK, score.lower(), match) for score, match in when.risk.items()]
    tests += [_test(_CASE, name, match) for name, match in when.case.items()]
    tests += [_test(_OPTION, name, match) for name, match in when.options.items()]
    tests += [_test(_FACT, name, match) for name, match in when.facts.items()]
    age = when.age
    return CompiledRule(
        rule=rule,
        tests=tuple(tests),
        age_min=age.min if age is not None else None,
        age_max=age.max if age is not None else None,
        has_age=age is not None,
    )


def compile_pack(rules: Sequence[Rule]) -> dict[TransitionKind, tuple[CompiledRule, ...]]:
    """For every transition kind, the rules whose ``kind`` condition admits it, in order."""
    compiled = [compile_when(rule) for rule in rules]
    return {
        kind: tuple(c for c in compiled if c.rule.when.kind.test(kind.value))
        for kind in TransitionKind
    }
