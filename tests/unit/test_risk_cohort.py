"""LACE on a generated SNOMED CT coded cohort agrees with the published definition on every stay.

The cohort and the reference implementation are ``benchmarks/_risk_cohort.py`` (seeded; the
reference is written from van Walraven et al., CMAJ 2010, and does not import fhirbridge).
``benchmarks/risk_agreement.py`` prints the same comparison as a table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest

from fhirbridge.risk import lace
from fhirbridge.risk.codes import charlson_table
from fhirbridge.risk.eligibility import not_scored_reason

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def cohort_module() -> ModuleType:
    """``benchmarks/_risk_cohort.py`` (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_risk_cohort", BENCHMARKS / "_risk_cohort.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_risk_cohort"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [20261201, 7, 1234])
def test_every_stay_agrees_with_the_published_lace(cohort_module: ModuleType, seed: int) -> None:
    """Total, tier and each of L, A, C, E equal the reference's on every surviving stay, with
    days counted in the facility's zone."""
    tz = ZoneInfo(cohort_module.FACILITY_ZONE)
    cohort = cohort_module.generate(seed=seed, patients=29)
    compared = 0
    for patient in cohort:
        for stay in patient.stays:
            if stay.died:
                continue
            want = cohort_module.reference_lace(patient, stay)
            others = [e for e in patient.encounters if e["id"] != stay.encounter["id"]]
            got = lace(stay.encounter, conditions=patient.conditions, encounters=others, tz=tz)
            expected = {"L": want.L, "A": want.A, "C": want.C, "E": want.E}
            assert got.components == expected, (stay.encounter["id"], got.as_dict())
            assert (got.total, got.tier) == (want.total, want.tier)
            compared += 1
    assert compared > 250


def test_the_cohort_exercises_what_it_is_meant_to(cohort_module: ModuleType) -> None:
    """The cohort is not trivial: comorbidity points of every size, concepts the SNOMED CT list
    does not name (recognised by their terms), local codes, stays whose UTC and local dates
    differ, and deaths."""
    cohort = cohort_module.generate(patients=29)
    table = charlson_table()
    unlisted = [
        code for code, _, _, category in cohort_module.POOL if table.concept(None, code) is None
    ]
    assert len(unlisted) >= 5
    c_points = {cohort_module.reference_lace(p, s).C for p in cohort for s in p.stays if not s.died}
    assert c_points == {0, 1, 2, 3, 5}
    local = [
        c
        for p in cohort
        for c in p.conditions
        if c["code"]["coding"][0]["system"] == cohort_module.LOCAL_SYSTEM
    ]
    assert local
    utc_differs = [
        s
        for p in cohort
        for s in p.stays
        if cohort_module.reference_lace(p, s).L != cohort_module.reference_lace(p, s, "UTC").L
    ]
    assert len(utc_differs) > 10
    assert any(s.died for p in cohort for s in p.stays)


def test_stays_ending_in_death_are_not_scored(cohort_module: ModuleType) -> None:
    """Every generated stay with an expired disposition is refused by the eligibility check,
    and no other stay is."""
    for patient in cohort_module.generate(patients=29):
        for stay in patient.stays:
            reason = not_scored_reason(stay.encounter)
            assert (reason is not None) == stay.died


def test_local_codes_are_reported_unrecognised(cohort_module: ModuleType) -> None:
    """A Condition coded only in a local system is listed in the score's unrecognised codes."""
    for patient in cohort_module.generate(patients=29):
        local = [
            c
            for c in patient.conditions
            if c["code"]["coding"][0]["system"] == cohort_module.LOCAL_SYSTEM
        ]
        if not local:
            continue
        stay = patient.stays[-1]
        result = lace(stay.encounter, conditions=local, tz=ZoneInfo(cohort_module.FACILITY_ZONE))
        reported = {(u.system, u.code) for u in result.unrecognised}
        active = [
            c
            for c in local
            if "abatementDateTime" not in c
            and c["verificationStatus"]["coding"][0]["code"] != "refuted"
            and c["onsetDateTime"][:10] <= stay.encounter["period"]["end"][:10]
        ]
        for condition in active:
            coding = condition["code"]["coding"][0]
            assert (coding["system"], coding["code"]) in reported
        return
    pytest.fail("the cohort has no local codes")
