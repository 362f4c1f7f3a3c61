"""The sekmet harness starts a real sekmet-fhir server on loopback and drives its ADT workflows."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from fhirbridge.testing.sekmet import (
    DISCHARGE_DISPOSITION_SYSTEM,
    ENCOUNTER_CLASS_SYSTEM,
    SekmetServer,
    SekmetStartError,
    SekmetWorkflowError,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(sekmet: SekmetServer) -> SekmetServer:
    """The session's open sekmet server (simulator off), cleared after each test."""
    return sekmet


def test_start_writes_consistent_settings(server: SekmetServer) -> None:
    """settings.yaml holds a loopback port, a base_url on that port and a data_dir of its own."""
    settings = yaml.safe_load(server.settings_path.read_text())
    assert settings["host"] == "127.0.0.1"
    assert settings["base_url"] == f"http://127.0.0.1:{settings['port']}/fhir" == server.base_url
    assert Path(settings["data_dir"]).parent == server.workdir
    assert settings["simulator"]["enabled"] is False
    metadata = httpx.get(f"{server.base_url}/metadata").json()
    assert metadata["resourceType"] == "CapabilityStatement"
    assert metadata["fhirVersion"] == "4.0.1"


def test_register_and_admit_create_an_inpatient_encounter(server: SekmetServer) -> None:
    """register_patient + admit give a Patient and an in-progress IMP Encounter in a bed."""
    patient_id = server.register_patient(family="Doe", given="Jane", gender="female")
    encounter_id = server.admit(patient_id, bed="bed-401-2")

    patient = server.read("Patient", patient_id)
    assert patient["name"][0]["family"] == "Doe"
    encounter = server.read("Encounter", encounter_id)
    assert encounter["status"] == "in-progress"
    assert encounter["class"] == {
        "system": ENCOUNTER_CLASS_SYSTEM,
        "code": "IMP",
        "display": "inpatient encounter",
    }
    assert encounter["subject"]["reference"] == f"Patient/{patient_id}"
    assert [loc["status"] for loc in encounter["location"]] == ["active"]
    assert encounter["location"][0]["location"]["display"] == "Bed 401-2"


def test_register_is_conditional_on_the_mrn(server: SekmetServer) -> None:
    """Registering an MRN twice returns the same Patient (sekmet's If-None-Exist on the MRN)."""
    first = server.register_patient(mrn="MRN-HARNESS-1")
    assert server.register_patient(mrn="MRN-HARNESS-1") == first


def test_transfer_then_discharge_with_disposition(server: SekmetServer) -> None:
    """A transfer closes the old bed; discharge finishes the stay and codes the disposition."""
    patient_id = server.register_patient()
    encounter_id = server.admit(patient_id)
    server.transfer(encounter_id, bed="bed-502-1")
    server.discharge(encounter_id, disposition="snf")

    encounter = server.read("Encounter", encounter_id)
    assert encounter["status"] == "finished"
    assert encounter["period"]["end"]
    assert [loc["status"] for loc in encounter["location"]] == ["completed", "completed"]
    assert encounter["hospitalization"]["dischargeDisposition"] == {
        "coding": [{"system": DISCHARGE_DISPOSITION_SYSTEM, "code": "snf"}]
    }
    assert encounter["meta"]["versionId"] == "3"  # admit, transfer, discharge
    with pytest.raises(SekmetWorkflowError, match="already finished"):
        server.discharge(encounter_id)


def test_ed_visit_discharge_gets_a_disposition_too(server: SekmetServer) -> None:
    """An EMER visit (plain REST) discharged home carries the same disposition coding."""
    patient_id = server.register_patient()
    encounter_id = server.ed_visit(patient_id, reason="chest pain")
    assert server.read("Encounter", encounter_id)["class"]["code"] == "EMER"

    encounter = server.discharge(encounter_id, disposition="home")

    stored = server.read("Encounter", encounter_id)
    assert stored == encounter
    assert stored["status"] == "finished"
    assert stored["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "home"


def test_cancel_marks_the_encounter_cancelled(server: SekmetServer) -> None:
    """cancel (A11) leaves a cancelled Encounter with the status in its history."""
    encounter_id = server.admit(server.register_patient(), planned=True)
    assert server.read("Encounter", encounter_id)["status"] == "planned"

    server.cancel(encounter_id)

    encounter = server.read("Encounter", encounter_id)
    assert encounter["status"] == "cancelled"
    assert encounter["statusHistory"][-1]["status"] == "cancelled"


def test_death_discharges_expired_and_marks_the_patient(server: SekmetServer) -> None:
    """death() discharges the open stay with disposition exp and sets deceasedDateTime."""
    patient_id = server.register_patient()
    encounter_id = server.admit(patient_id)

    server.death(patient_id, when="2026-01-02T03:04:05Z", encounter_id=encounter_id)

    assert server.read("Patient", patient_id)["deceasedDateTime"] == "2026-01-02T03:04:05Z"
    encounter = server.read("Encounter", encounter_id)
    assert encounter["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "exp"


def test_cli_workflow_writes_to_the_same_store(server: SekmetServer) -> None:
    """`sekmet workflow run` in the server's folder writes what the server then serves."""
    result = server.run_workflow("adt.register_patient", {"family": "Cli"}, via="cli")
    patient = server.read("Patient", result["patient"]["id"])
    assert patient["name"][0]["family"] == "Cli"


def test_clear_since_deletes_what_was_written_after_the_mark(server: SekmetServer) -> None:
    """clear_since deletes every resource created or changed after mark() (a Subscription
    among them), keeps what came before, and the workflows work again afterwards."""
    before = server.register_patient(family="Before")
    mark = server.mark()
    patient = server.register_patient(family="After")
    stay = server.admit(patient)
    subscription = server.create(
        {
            "resourceType": "Subscription",
            "status": "off",
            "reason": "harness test",
            "criteria": "Encounter?status=finished",
            "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/notify"},
        }
    )
    assert {("Patient", patient), ("Encounter", stay)} <= set(server.changed_since(mark))

    assert server.clear_since(mark) >= 3
    assert server.changed_since(mark) == []
    for kind, rid in (
        ("Patient", patient),
        ("Encounter", stay),
        ("Subscription", subscription["id"]),
    ):
        assert server.search(kind, {"_id": rid}) == []
    assert server.read("Patient", before)["name"][0]["family"] == "Before"
    again = server.admit(server.register_patient())
    assert server.read("Encounter", again)["status"] == "in-progress"


def test_basic_auth_server_guards_rest_but_harness_gets_in(tmp_path: Path) -> None:
    """With basic auth, anonymous reads get 401 while the harness reads with the user."""
    auth = {"types": ["basic"], "users": {"nurse": "pw-1"}}
    with SekmetServer.start(tmp_path, auth=auth) as guarded:
        patient_id = guarded.register_patient()
        assert httpx.get(f"{guarded.base_url}/Patient/{patient_id}").status_code == 401
        assert guarded.read("Patient", patient_id)["id"] == patient_id


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    """A settings file sekmet rejects makes start() fail fast with sekmet's own complaint."""
    with pytest.raises(SekmetStartError, match="server_auth"):
        SekmetServer.start(tmp_path, extra_settings={"server_auth": {"types": ["bogus"]}})
