"""Projecting from raw bytes gives what projecting the parsed dict gives, or raises alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbridge.detect.projection import EncounterView

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _data import encounter_versions  # noqa: E402 (the benchmark's generator)


def _both(resource: Any) -> tuple[Any, Any]:
    """The dict projection and the raw one, each as a value or the exception type raised."""
    raw = json.dumps(resource).encode()
    outcomes: list[Any] = []
    for project in (lambda: EncounterView.of(json.loads(raw)), lambda: EncounterView.from_raw(raw)):
        try:
            outcomes.append(project())
        except Exception as exc:
            outcomes.append(type(exc))
    return outcomes[0], outcomes[1]


def test_generated_versions_project_alike() -> None:
    """Every version the benchmark generates (stays, transfers, ED visits, readmissions)."""
    for raw in encounter_versions(600, patients=120, seed=7):
        assert EncounterView.from_raw(raw) == EncounterView.of(json.loads(raw))


@pytest.mark.parametrize(
    "name", ["Encounter-emerg.json", "Encounter-example.json", "Encounter-f203.json"]
)
def test_fhir_examples_project_alike(name: str) -> None:
    """The FHIR specification's Encounter examples."""
    resource = json.loads((DATA / name).read_text())
    view, raw_view = _both(resource)
    assert raw_view == view


# members of every JSON type where EncounterView reads, so that the typed decode meets
# values it cannot read and the fallback must answer as the dict projection does
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "IMP", "EMER", "x"]),
    st.just({"reference": "Patient/2", "code": "home"}),  # an object where a value belongs
)
_instant = st.one_of(
    _scalar, st.sampled_from(["2026-01-02", "2026-01-02T03:04:05Z", "2026", "junk"])
)
_reference = st.one_of(
    _scalar,
    st.fixed_dictionaries(
        {}, optional={"reference": st.one_of(_scalar, st.sampled_from(["Patient/1", "#c"]))}
    ),
)
_coding = st.one_of(
    _scalar,
    st.fixed_dictionaries({}, optional={"system": _scalar, "code": _scalar}),
)
_concept = st.one_of(
    _scalar,
    st.fixed_dictionaries(
        {},
        optional={"coding": st.one_of(_scalar, st.lists(_coding, max_size=2)), "code": _scalar},
    ),
)
_period = st.one_of(
    _scalar, st.fixed_dictionaries({}, optional={"start": _instant, "end": _instant})
)
_encounter = st.fixed_dictionaries(
    {"resourceType": st.just("Encounter")},
    optional={
        "id": _scalar,
        "status": _scalar,
        "class": st.one_of(_coding, st.lists(_coding, max_size=1)),
        "classHistory": st.one_of(
            _scalar,
            st.lists(
                st.fixed_dictionaries({}, optional={"class": _coding, "period": _period}),
                max_size=3,
            ),
        ),
        "subject": _reference,
        "period": _period,
        "hospitalization": st.one_of(
            _scalar,
            st.fixed_dictionaries(
                {}, optional={"dischargeDisposition": _concept, "admitSource": _concept}
            ),
        ),
        "serviceProvider": _reference,
        "partOf": _reference,
        "location": st.one_of(
            _scalar,
            st.lists(
                st.one_of(
                    _scalar,
                    st.fixed_dictionaries(
                        {},
                        optional={"location": _reference, "status": _scalar, "period": _period},
                    ),
                ),
                max_size=3,
            ),
        ),
        "meta": st.one_of(
            _scalar,
            st.fixed_dictionaries({}, optional={"versionId": _scalar, "lastUpdated": _instant}),
        ),
        "identifier": st.lists(st.dictionaries(st.text(max_size=3), _scalar), max_size=2),
    },
)


@pytest.mark.parametrize(
    "resource",
    [
        # a falsy code is no code; a Coding given as the concept; an empty coding list
        {"hospitalization": {"dischargeDisposition": {"coding": [{"code": ""}, {"code": "exp"}]}}},
        {"hospitalization": {"dischargeDisposition": {"system": "s", "code": "home"}}},
        {"hospitalization": {"admitSource": {"coding": [], "code": 0}}},
        {"hospitalization": {"admitSource": {"coding": {"code": "x"}}}},
        # references: an object as the reference, a string as the Reference, contained
        {"subject": {"reference": {"reference": "Patient/9"}}},
        {"subject": "Patient/9", "partOf": {"reference": "#p"}},
        {"location": [{"location": {"reference": {"reference": "Location/1"}}}]},
        {"location": [{"location": "Location/1", "status": "active"}, 7]},
        # class: R5's list, an empty object; classHistory entries without a code
        {"class": [{"coding": [{"code": "IMP"}]}], "classHistory": [{"class": {}}]},
        {"class": {}, "status": None, "id": 0, "meta": {"versionId": 3}},
        {"period": "2026", "meta": []},
    ],
)
def test_unusual_members_project_alike(resource: dict[str, Any]) -> None:
    """Members of unusual types: the raw projection answers (or fails) as the dict one."""
    view, raw_view = _both({"resourceType": "Encounter", "id": "e", **resource})
    assert raw_view == view


@settings(max_examples=1500, deadline=None)
@given(_encounter)
def test_any_shape_projects_or_fails_alike(resource: dict[str, Any]) -> None:
    """Whatever types the members have, both projections agree (or both raise the same)."""
    view, raw_view = _both(resource)
    assert raw_view == view


def test_invalid_bytes_raise_value_error() -> None:
    """Bytes that are not a JSON object raise ValueError, as parsing them would."""
    with pytest.raises(ValueError, match="Expecting value"):
        EncounterView.from_raw(b"not json")
    with pytest.raises(ValueError, match="not a JSON object"):
        EncounterView.from_raw(b"[1, 2]")
