"""Compiled rule conditions answer as the rule models' own ``test`` methods do."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from fhirbridge.rules import RulePack, load_rules
from fhirbridge.rules._compiled import Known, compile_pack, compile_when
from fhirbridge.rules.model import Defaults, Rule
from fhirbridge.values import TransitionKind


def _model_holds(rule: Rule, kind: TransitionKind, known: Known) -> bool:
    """The conditions as the pydantic models state them, one ``Match.test`` at a time."""
    when = rule.when
    if not when.kind.test(kind.value):
        return False
    pairs: list[tuple[Any, Any]] = [
        (when.encounter_class, known.facts.get("encounter_class")),
        (when.disposition_group, known.group),
        (when.disposition, known.facts.get("disposition_code")),
        (when.service_provider, known.facts.get("service_provider")),
        *((m, known.risk.get(s.lower(), "unknown")) for s, m in when.risk.items()),
        *((m, known.case.get(n)) for n, m in when.case.items()),
        *((m, known.option(n)) for n, m in when.options.items()),
        *((m, known.facts.get(n)) for n, m in when.facts.items()),
    ]
    if when.age is not None and not when.age.test(known.age):
        return False
    return all(match is None or match.test(value) for match, value in pairs)


@pytest.fixture(scope="module")
def pack() -> RulePack:
    """The shipped pack, loaded once."""
    return load_rules()


def _values(pack: RulePack, name: str) -> list[Any]:
    """Every value the pack's conditions name for ``name``, one it does not, and None."""
    found: set[Any] = {"zzz-not-named", None}
    for rule in pack.rules:
        when = rule.when
        for key, match in [
            ("encounter_class", when.encounter_class),
            ("disposition_code", when.disposition),
            ("service_provider", when.service_provider),
            ("group", when.disposition_group),
            *when.facts.items(),
            *when.case.items(),
        ]:
            if key == name and match is not None:
                found.update(match.values)
    return sorted(found, key=str)


def test_kind_index_keeps_file_order_and_admits_only_matching_kinds(pack: RulePack) -> None:
    """Each kind lists exactly the rules whose ``kind`` admits it, in the pack's order."""
    index = compile_pack(pack.rules)
    for kind in TransitionKind:
        expected = [r.id for r in pack.rules if r.when.kind.test(kind.value)]
        assert [c.rule.id for c in index[kind]] == expected


def test_compiled_predicates_agree_with_the_models_on_the_shipped_pack(pack: RulePack) -> None:
    """Over the values the conditions name (and others, and absent ones), every shipped rule
    answers as its model does, for every kind."""
    defaults = Defaults()
    classes = _values(pack, "encounter_class")
    codes = _values(pack, "disposition_code")
    groups = [v for v in _values(pack, "group") if v is not None]
    cases = {name: _values(pack, name) for name in ("careplan", "coverage", "referred")}
    compiled = [compile_when(rule) for rule in pack.rules]
    checked = 0
    for klass, code, group, age, tier in itertools.product(
        classes, codes, groups, (None, 17, 40, 70, 90), ("high", "low", "unknown")
    ):
        for case in ({}, {k: v[0] for k, v in cases.items()}, {k: v[-1] for k, v in cases.items()}):
            known = Known(
                facts={"encounter_class": klass, "disposition_code": code, "flag": True},
                group=group,
                age=age,
                risk={"lace": tier, "hospital": tier},
                case=case,
                option=defaults.option,
            )
            for kind in (TransitionKind.DISCHARGE, TransitionKind.ADMISSION, TransitionKind.DEATH):
                for rule in compiled:
                    expected = _model_holds(rule.rule, kind, known)
                    got = rule.rule.when.kind.test(kind.value) and rule.holds(known)
                    assert got == expected, (rule.rule.id, kind, known)
                    checked += 1
    assert checked > 10_000


def test_negated_and_boolean_conditions_compile_as_the_model_reads_them() -> None:
    """``not:`` lists, booleans compared as ``true``/``false`` and absent facts behave as
    ``Match.test`` says."""
    rule = Rule.model_validate(
        {
            "id": "r",
            "when": {
                "kind": ["discharge"],
                "encounter_class": {"not": ["EMER"]},
                "facts": {"flag": [True]},
                "age": {"min": 65},
            },
            "then": [{"cancel-tasks": {"scope": "patient", "status": "cancelled", "reason": "x"}}],
        }
    )
    compiled = compile_when(rule)
    defaults = Defaults()
    for klass, flag, age in itertools.product(
        ("EMER", "IMP", None), (True, False, "true", None), (None, 64, 65)
    ):
        known = Known(
            facts={"encounter_class": klass, "flag": flag},
            group="home",
            age=age,
            risk={},
            case={},
            option=defaults.option,
        )
        assert compiled.holds(known) == _model_holds(rule, TransitionKind.DISCHARGE, known)
