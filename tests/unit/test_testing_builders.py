"""The shipped resource builders: valid FHIR R4 (R4B models), deterministic, overridable, read
by the engine as the resources they claim to be; and the example of a user's rule test runs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhirbridge.detect import DetectContext, EncounterContext, detect
from fhirbridge.detect.projection import EncounterView
from fhirbridge.rules import disposition_group
from fhirbridge.testing import builders as b
from fhirbridge.values import is_engine_resource

ROOT = Path(__file__).resolve().parents[2]
SERVER = "https://ehr.example.org/fhir"
BUILDERS: list[Callable[..., dict[str, Any]]] = [
    b.patient,
    b.encounter,
    b.condition,
    b.observation,
    b.service_request,
    b.task,
    b.care_plan,
    b.coverage,
    b.appointment,
]


def valid(resource: dict[str, Any]) -> None:
    """Validate ``resource`` with the ``fhir.resources`` R4B model of its type."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_defaults_are_valid_fhir(build: Callable[..., dict[str, Any]]) -> None:
    """Each builder's default resource validates, and names Patient/p1 wherever it has one."""
    resource = build()
    valid(resource)
    assert resource["id"]
    assert "Patient/p1" in repr(resource) or resource["resourceType"] == "Patient"


# every option of every builder, at once
RICH = [
    b.patient("p2", gender=None, birth_date=date(1940, 1, 2), mrn=("urn:oid:1.2.3", "M1")),
    b.encounter(
        "e2",
        cls="EMER",
        status="in-progress",
        start=datetime(2026, 11, 2, 8, tzinfo=UTC),
        disposition=("http://www.nubc.org/patient-discharge", "01"),
        locations=["ed-bay-3", {"location": {"reference": "Location/4a"}, "status": "planned"}],
        class_history=[("EMER", "2026-11-02T08:00:00Z", None)],
    ),
    b.encounter(
        class_history=[
            ("EMER", "2026-11-02T08:00:00Z", "2026-11-02T11:00:00Z"),
            ("IMP", "2026-11-02T11:00:00Z", None),
        ],
        locations=["Location/ed", "Location/4a"],
        disposition="snf",
    ),
    b.condition(
        "13645005",
        b.SNOMED,
        clinical="resolved",
        verification="confirmed",
        display="COPD",
        recorded="2026-06-01",
    ),
    b.condition(clinical=None),
    b.observation(value=13.1, unit="g/dL", category="laboratory"),
    b.observation("88122-7", value=(b.LOINC, "LA28397-0"), category="survey", effective=None),
    b.observation(value="often", status="amended"),
    b.observation(value=True),
    b.service_request(referral=False, code=None, authored=None, status="completed"),
    b.task(
        focus="e1",
        owner="cm",
        due=date(2026, 11, 9),
        based_on="cp1",
        encounter="e1",
        display="Post-discharge call",
        authored="2026-11-05T16:00:00Z",
        last_modified=datetime(2026, 11, 6, 9, tzinfo=UTC),
        engine=True,
        system=None,
        status="in-progress",
    ),
    b.care_plan(activities=["t1", "Task/t2"], engine=True, created=None),
    b.coverage(status="cancelled", start=None, end=date(2026, 11, 30)),
    b.appointment(status="noshow", service_type=(b.SNOMED, "185389009"), end=None),
]


@pytest.mark.parametrize("resource", RICH, ids=lambda r: r["resourceType"])
def test_every_option_is_valid_fhir(resource: dict[str, Any]) -> None:
    """The elements every option adds validate too."""
    valid(resource)


def test_the_validation_can_fail() -> None:
    """The check above is real: a Task without its required intent does not validate."""
    with pytest.raises(ValidationError):
        valid(b.revise(b.task(), intent=None))


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_builders_are_deterministic_and_independent(build: Callable[..., dict[str, Any]]) -> None:
    """Two calls give equal resources that share nothing: changing one leaves the next alone."""
    first, second = build(), build()
    assert first == second
    for value in first.values():
        if isinstance(value, dict | list):
            value.clear()
    assert build() == second


def test_keywords_replace_add_and_remove_elements() -> None:
    """Other top-level elements pass as keywords; a trailing underscore is dropped and None
    removes one; ``rid=None`` leaves the id out for a server to assign."""
    resource = b.encounter(
        class_={"code": "OBSENC"}, serviceType={"text": "Cardiology"}, period=None, rid=None
    )
    assert resource["class"] == {"code": "OBSENC"}
    assert resource["serviceType"] == {"text": "Cardiology"}
    assert "period" not in resource
    assert "id" not in resource
    assert b.task(for_={"reference": "Patient/p9"})["for"] == {"reference": "Patient/p9"}


def test_references_take_ids_or_references() -> None:
    """A bare id gets the expected type; a relative or absolute reference is kept."""
    assert b.condition(patient="p7")["subject"] == {"reference": "Patient/p7"}
    assert b.condition(patient="Patient/p7")["subject"] == {"reference": "Patient/p7"}
    absolute = f"{SERVER}/Patient/p7"
    assert b.condition(patient=absolute)["subject"] == {"reference": absolute}
    assert b.task(focus="ServiceRequest/sr1")["focus"] == {"reference": "ServiceRequest/sr1"}


def test_task_carries_its_encounter_display_and_work_dates() -> None:
    """A Task's encounter, coding display, authoredOn and lastModified are set when given and
    left out otherwise."""
    worked = b.task(
        encounter="e2",
        display="Post-discharge call",
        authored="2026-11-05T16:00:00Z",
        last_modified=datetime(2026, 11, 6, 9, tzinfo=UTC),
    )
    assert worked["encounter"] == {"reference": "Encounter/e2"}
    assert worked["code"]["coding"][0]["display"] == "Post-discharge call"
    assert (worked["authoredOn"], worked["lastModified"]) == (
        "2026-11-05T16:00:00Z",
        "2026-11-06T09:00:00Z",
    )
    assert not {"encounter", "authoredOn", "lastModified"} & set(b.task())
    assert "display" not in b.task()["code"]["coding"][0]


def test_revise_makes_the_next_version() -> None:
    """revise copies, replaces fields and stamps versionId and lastUpdated, keeping the tag."""
    first = b.task(engine=True, meta={"versionId": "1", "tag": b.task(engine=True)["meta"]["tag"]})
    second = b.revise(
        first, version=2, updated=datetime(2026, 11, 6, 9, tzinfo=UTC), status="completed"
    )
    assert second["meta"]["versionId"] == "2"
    assert second["meta"]["lastUpdated"] == "2026-11-06T09:00:00Z"
    assert is_engine_resource(second)
    assert (first["status"], first["meta"]["versionId"]) == ("requested", "1")


def test_encounter_reads_as_the_stay_it_describes() -> None:
    """The engine's projection of an encounter sees its class, status, period, disposition,
    locations and class history as given."""
    view = EncounterView.of(
        b.encounter(
            cls="IMP",
            disposition="snf",
            locations=["ed", "4a"],
            class_history=[
                ("EMER", "2026-11-02T08:00:00Z", "2026-11-02T11:00:00Z"),
                ("IMP", "2026-11-02T11:00:00Z", None),
            ],
        )
    )
    assert (view.class_code, view.status, view.patient) == ("IMP", "finished", "Patient/p1")
    assert view.class_history == ("EMER", "IMP")
    assert view.class_since == datetime(2026, 11, 2, 11, tzinfo=UTC)
    assert view.start == datetime(2026, 11, 2, 8, tzinfo=UTC)
    assert view.end == datetime(2026, 11, 5, 15, tzinfo=UTC)
    assert view.disposition_code == "snf"
    assert view.current_location == "Location/4a"


def test_the_engine_detects_what_the_builders_describe() -> None:
    """Discharge, ED visit, referral, no-show and coverage transitions come out of builders."""
    ctx = DetectContext(
        encounter=EncounterContext(server=SERVER, disposition_group=disposition_group)
    )
    discharge = detect(b.encounter(status="in-progress"), b.encounter(disposition="home"), ctx)
    assert [t.facts.get("disposition_group") for t in discharge if t.kind.value == "discharge"] == [
        "community"
    ]
    assert "ed-visit" in {
        t.kind.value for t in detect(None, b.encounter(cls="EMER", status="in-progress"), ctx)
    }
    assert [t.kind.value for t in detect(None, b.service_request(), ctx)] == ["referral-placed"]
    assert [t.kind.value for t in detect(b.appointment(), b.appointment(status="noshow"), ctx)] == [
        "appointment-noshow"
    ]
    assert [t.kind.value for t in detect(b.coverage(status="draft"), b.coverage(), ctx)] == [
        "coverage-active"
    ]


def test_the_users_rule_test_example_runs(tmp_path: Path) -> None:
    """examples/test_my_rules.py, the README's example of a user's rule test, passes."""
    path = ROOT / "examples" / "test_my_rules.py"
    spec = importlib.util.spec_from_file_location("users_rule_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = sorted(name for name in vars(module) if name.startswith("test_"))
    assert len(tests) == 2
    for n, name in enumerate(tests):
        folder = tmp_path / str(n)
        folder.mkdir()
        getattr(module, name)(folder)
