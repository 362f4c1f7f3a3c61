"""HL7 v2 ADT -> FHIR mapping (pure): event status, class, disposition, death, timestamps,
identifiers, HL7 nulls, and errors that name the segment and field.

Sample messages are in tests/data/hl7v2/ (see tests/data/SOURCES.md); variants are built here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fhirbridge.errors import RuleError
from fhirbridge.rules.dispositions import disposition_group
from fhirbridge.sources._v2map import (
    V2Error,
    V2Tables,
    overlay_encounter,
    overlay_patient,
    read_adt,
)
from fhirbridge.sources.hl7v2 import split_messages
from fhirbridge.testing.builders import ACT_CODE, encounter
from tests._builders.hl7 import DATA, adt

V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"
VISIT = "urn:oid:1.2.3.4.5.2"


def sample(name: str) -> str:
    """The first message of a sample file, as text with ``\\r`` between segments."""
    return split_messages((DATA / name).read_bytes())[0].text


def server_encounter(**extra: Any) -> dict[str, Any]:
    """The Encounter the FHIR server holds for visit V001."""
    built: dict[str, Any] = {
        "patient": "pat-1",
        "status": "in-progress",
        "start": "2026-12-20T09:00:00-05:00",
        "locations": ["bed-1"],
        "meta": {"versionId": "3", "lastUpdated": "2026-12-20T14:00:00Z", "tag": [{"code": "x"}]},
        "identifier": [{"system": VISIT, "value": "V001"}],
        "serviceProvider": {"reference": "Organization/hosp"},
    }
    return encounter("enc-1", **{**built, **extra})


@pytest.mark.parametrize(
    ("name", "event", "status"),
    [
        ("ADT-A01-01.hl7", "A01", "in-progress"),  # admit
        ("ADT-A02-01.hl7", "A02", "in-progress"),  # transfer
        ("ADT-A03-01.hl7", "A03", "finished"),  # discharge, PV1-45 valued
        ("ADT-A04-01.hl7", "A04", "planned"),  # register
        ("ADT-A05-01.hl7", "A05", "planned"),  # pre-admit
        ("ADT-A06-01.hl7", "A06", "in-progress"),  # outpatient to inpatient
        ("ADT-A07-01.hl7", "A07", "in-progress"),  # inpatient to outpatient
        ("ADT-A08-02.hl7", "A08", None),  # update: keeps the server's status
        ("ADT-A11-01.hl7", "A11", "cancelled"),  # cancel admit
        ("ADT-A13-02.hl7", "A13", "in-progress"),  # cancel discharge: its PV1-45 is ignored
        ("ADT01-23.hl7", "A01", "in-progress"),  # v2.3, UTF-8 BOM, LF separators
        ("sample_msh.hl7", "A01", "in-progress"),  # python-hl7's ADT sample
    ],
)
def test_each_sample_event_maps_to_its_encounter_status(
    name: str, event: str, status: str | None
) -> None:
    """The trigger event (MSH-9.2, never the stale EVN-1 of the samples) sets the status."""
    message = read_adt(sample(name))
    assert (message.event, message.status) == (event, status)


def test_a12_cancel_transfer_keeps_the_status() -> None:
    """A12 (no sample message) keeps the server's status, like A08."""
    assert read_adt(adt("A12")).status is None


def test_a13_clears_the_discharge_it_cancels() -> None:
    """A cancel discharge reopens the stay: period.end and the disposition are removed."""
    message = read_adt(sample("ADT-A13-02.hl7"))
    assert "end" not in message.encounter["period"]
    assert message.cleared >= {"period.end", "hospitalization.dischargeDisposition"}
    base = server_encounter(
        status="finished",
        period={"start": "2026-12-20T09:00:00-05:00", "end": "2026-12-24T15:00:00-05:00"},
        hospitalization={"dischargeDisposition": {"coding": [{"code": "home"}]}},
    )
    reopened = overlay_encounter(base, message, VISIT)
    assert reopened["status"] == "in-progress"
    assert "end" not in reopened["period"]
    assert "dischargeDisposition" not in reopened["hospitalization"]


def test_a_discharge_date_finishes_the_stay_whatever_the_event() -> None:
    """PV1-45 valued sets period.end and status finished (V2-to-FHIR), here on an A08."""
    message = read_adt(adt("A08", pv1={45: "202612241500-0500"}))
    assert message.status == "finished"
    assert message.encounter["period"]["end"] == "2026-12-24T15:00:00-05:00"


@pytest.mark.parametrize(
    ("pv1_2", "code"),
    [
        ("E", "EMER"),  # emergency
        ("I", "IMP"),  # inpatient
        ("O", "AMB"),  # outpatient
        ("P", "PRENC"),  # preadmit
        ("R", "AMB"),  # recurring patient
    ],
)
def test_patient_class_maps_to_act_code(pv1_2: str, code: str) -> None:
    """PV1-2 -> Encounter.class in the v3 ActCode system."""
    klass = read_adt(adt(pv1={2: pv1_2})).encounter["class"]
    assert (klass["system"], klass["code"]) == (ACT_CODE, code)


def test_an_unknown_class_keeps_the_servers_and_a_bad_one_is_an_error() -> None:
    """U (unknown) maps to nothing; a letter outside table 0004 names PV1-2."""
    assert "class" not in read_adt(adt(pv1={2: "U"})).encounter
    with pytest.raises(V2Error, match=r"^PV1-2: 'X' is not a patient class"):
        read_adt(adt(pv1={2: "X"}))


@pytest.mark.parametrize(
    ("pv1_36", "group"),
    [
        ("01", "community"),  # home
        ("1", "community"),  # unpadded
        ("03", "post-acute"),  # skilled nursing facility
        ("07", "against-advice"),  # left against medical advice
        ("20", "death"),  # expired
        ("01^Home^HL70112", "community"),  # CWE naming table 0112
    ],
)
def test_discharge_disposition_is_a_v2_0112_code_the_engine_groups(pv1_36: str, group: str) -> None:
    """PV1-36 -> dischargeDisposition in v2-0112, which mappings/dispositions.yaml groups."""
    concept = read_adt(adt(pv1={36: pv1_36})).encounter["hospitalization"]["dischargeDisposition"]
    coding = concept["coding"][0]
    assert coding["system"] == V2_0112
    assert disposition_group(coding["system"], coding["code"]) == group


def test_a_disposition_from_another_table_has_no_system() -> None:
    """The Microsoft samples send 'Admitted as Inpatient^Sample^ACR': kept, group unknown."""
    concept = read_adt(sample("ADT-A03-01.hl7")).encounter["hospitalization"][
        "dischargeDisposition"
    ]
    assert concept == {
        "coding": [{"code": "Admitted as Inpatient", "display": "Sample"}],
        "text": "Sample (ACR)",
    }
    assert disposition_group(None, "Admitted as Inpatient") == "unknown"


def test_an_a03_to_expired_marks_the_patient_deceased() -> None:
    """Disposition 20 on a discharge is a death even without PID-30."""
    message = read_adt(adt("A03", pv1={36: "20", 45: "20261224150000-0500"}))
    assert message.deceased and message.patient["deceasedBoolean"] is True
    assert not read_adt(adt("A08", pv1={36: "20"})).deceased  # only a discharge says so


@pytest.mark.parametrize(
    ("pid", "deceased"),
    [
        ({30: "Y"}, {"deceasedBoolean": True}),  # indicator only
        ({29: "20261223081500-0500", 30: "Y"}, {"deceasedDateTime": "2026-12-23T08:15:00-05:00"}),
        ({29: "20261223"}, {"deceasedDateTime": "2026-12-23"}),  # a date keeps its precision
        ({30: "N"}, {}),  # alive
        ({30: "NO "}, {}),  # as ADT01-23.hl7 sends it
    ],
)
def test_pid_29_and_30_give_the_death(pid: dict[int, str], deceased: dict[str, Any]) -> None:
    """PID-29 -> deceasedDateTime, else PID-30 Y -> deceasedBoolean."""
    patient = read_adt(adt("A08", pid=pid)).patient
    assert {k: v for k, v in patient.items() if k.startswith("deceased")} == deceased


def test_death_time_of_the_sample_is_the_instant_the_reference_converter_gives() -> None:
    """PID-29 20080825111630+0115 is 2008-08-25T10:01:30Z, as in the converter's output."""
    died = read_adt(sample("ADT-A03-01.hl7")).patient["deceasedDateTime"]
    assert died == "2008-08-25T11:16:30+01:15"
    assert datetime.fromisoformat(died) == datetime(2008, 8, 25, 10, 1, 30, tzinfo=UTC)


def test_timestamps_with_and_without_an_offset() -> None:
    """An offset is kept; a time without one is read in the facility's time zone."""
    with_offset = read_adt(sample("ADT-A03-01.hl7"))
    assert with_offset.sent_at.utcoffset() == timedelta(hours=2, minutes=15)
    assert with_offset.encounter["period"]["start"] == "2015-02-08T11:34:19+01:10"
    local = read_adt(sample("sample_msh.hl7"), tz=ZoneInfo("America/New_York"))
    assert local.sent_at.isoformat() == "2013-10-17T14:00:41-04:00"
    assert local.encounter["period"]["start"] == "2014-02-10T22:53:00-05:00"
    utc = read_adt(sample("sample_msh.hl7"))
    assert utc.sent_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("pv1", "where"),
    [
        ({44: "2015x"}, "PV1-44"),  # not digits
        ({45: "20261340"}, "PV1-45"),  # month 13
        ({44: "2026122"}, "PV1-44"),  # odd number of digits
    ],
)
def test_a_bad_timestamp_names_its_field(pv1: dict[int, str], where: str) -> None:
    """A garbled date/time is an error naming the segment and field."""
    with pytest.raises(V2Error, match=rf"^{where}: ") as caught:
        read_adt(adt(pv1=pv1))
    assert caught.value.where == where and caught.value.ack_code == "AR"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("hello, world", "MSH"),  # not HL7 at all
        (adt(control=""), "MSH-10"),  # no control id
        (adt(sent=""), "MSH-7"),  # no message time
        (adt(pv1={19: ""}), "PV1-19"),  # no visit number
        (adt(pid={3: ""}), "PID-3"),  # no patient identifier
        (adt(pid={30: "maybe"}), "PID-30"),  # not a yes/no indicator
        (adt().replace("\rPV1|", "\rZV1|"), "PV1"),  # no PV1 segment
        (sample("ADT-A40-01.hl7"), "MSH-9"),  # a merge: not handled here
        (sample("sample_hl7.hl7"), "MSH-9"),  # ORU^R01, not ADT
        (sample("ADT04-251.hl7"), "PV1-19"),  # an ED registration without a visit number
    ],
)
def test_garbled_or_unhandled_messages_name_the_segment_and_field(text: str, where: str) -> None:
    """Every refusal says where the problem is."""
    with pytest.raises(V2Error) as caught:
        read_adt(text)
    assert caught.value.where == where
    assert str(caught.value).startswith(f"{where}: ")


def test_an_hl7_null_clears_the_element() -> None:
    """PV1-45 "" (python-hl7's sample) is an explicit null: the server's period.end goes."""
    message = read_adt(sample("sample_msh.hl7"))
    assert "period.end" in message.cleared
    base = server_encounter(period={"start": "2014-02-10T22:53:00Z", "end": "2014-02-11T10:00:00Z"})
    assert "end" not in overlay_encounter(base, message, VISIT)["period"]


def test_admit_source_maps_to_admit_source_and_keeps_the_v2_code() -> None:
    """PV1-14 7 (emergency room) -> admit-source emd (what LACE reads) plus v2-0023 7;
    free text keeps only the v2 coding, with HL7 escapes decoded."""
    codings = read_adt(adt(pv1={14: "7"})).encounter["hospitalization"]["admitSource"]["coding"]
    assert [c["code"] for c in codings] == ["emd", "7"]
    sample_source = read_adt(sample("ADT-A01-01.hl7")).encounter["hospitalization"]["admitSource"]
    assert sample_source["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0023",
            "code": "NHS Provider-General (inc.A&E-this Hosp)",
        }
    ]


def test_pid_3_identifiers_and_the_mrn() -> None:
    """Each PID-3 repetition is an Identifier (an ISO assigning authority becomes the system);
    the MRN is the repetition typed MR, else the first one."""
    message = read_adt(adt(pid={3: "555^^^SSA^SS~M42^^^HOSP&1.2.840.99&ISO^MR"}))
    assert message.mrn == "M42"
    assert message.patient["identifier"][1] == {
        "value": "M42",
        "system": "urn:oid:1.2.840.99",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]
        },
    }
    assert read_adt(sample("ADT-A06-01.hl7")).mrn == "PATID1234"  # CX.5 holds a facility name


def test_locations_map_to_display_references_used_when_the_server_has_none() -> None:
    """PV1-3 is the active location (planned for a preadmit), PV1-6 the completed prior one;
    the server's resolvable Location references win when it has any."""
    message = read_adt(sample("ADT-A06-01.hl7"))
    assert message.encounter["location"] == [
        {"location": {"display": "SPROOM, ROOM2, BED-1, FACILITY-1"}, "status": "active"},
        {"location": {"display": "WAITINGROOM, ROOM1, FACILITY1"}, "status": "completed"},
    ]
    kept = overlay_encounter(server_encounter(), message, VISIT)
    assert kept["location"] == server_encounter()["location"]
    used = overlay_encounter(server_encounter(location=[]), message, VISIT)
    assert used["location"] == message.encounter["location"]


def test_overlay_is_a_new_version_of_the_servers_encounter() -> None:
    """Same id, subject and other elements; meta says v2:<event>:<MSH-10>:<MSH-7> (tags kept)."""
    message = read_adt(
        adt("A03", pv1={36: "01", 44: "20261220090000-0500", 45: "20261224150000-0500"})
    )
    version = overlay_encounter(server_encounter(), message, VISIT)
    assert version["id"] == "enc-1" and version["subject"] == {"reference": "Patient/pat-1"}
    assert version["meta"] == {
        "versionId": "v2:A03:CTRL1:20261224150000",
        "lastUpdated": "2026-12-24T15:00:00-05:00",
        "tag": [{"code": "x"}],
    }
    assert version["status"] == "finished"
    assert version["period"] == {
        "start": "2026-12-20T09:00:00-05:00",
        "end": "2026-12-24T15:00:00-05:00",
    }
    assert version["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "01"
    assert version["serviceProvider"] == {"reference": "Organization/hosp"}
    assert version["identifier"] == [{"system": VISIT, "value": "V001"}]
    kept = overlay_encounter(server_encounter(), read_adt(adt("A08", pv1={2: ""})), VISIT)
    assert kept["status"] == "in-progress" and kept["class"]["code"] == "IMP"


def test_overlay_patient_only_for_a_death() -> None:
    """A message that says nothing of death gives no Patient version; one that does gives
    the server's Patient, deceased, as version v2:<MSH-10>."""
    server = {"resourceType": "Patient", "id": "pat-1", "deceasedBoolean": False}
    assert overlay_patient(server, read_adt(adt("A08"))) is None
    died = overlay_patient(server, read_adt(adt("A08", pid={29: "202612230815-0500"})))
    assert died is not None
    assert died["deceasedDateTime"] == "2026-12-23T08:15:00-05:00"
    assert (
        "deceasedBoolean" not in died and died["meta"]["versionId"] == "v2:A08:CTRL1:20261224150000"
    )


def test_a_bad_table_file_names_the_file_and_key(tmp_path: Path) -> None:
    """mappings/hl7v2.yaml is validated at load: a bad status names file, line and key."""
    shipped = (Path(__file__).parents[2] / "mappings" / "hl7v2.yaml").read_text()
    broken = tmp_path / "hl7v2.yaml"
    broken.write_text(shipped.replace("A03: {status: finished}", "A03: {status: done}"))
    with pytest.raises(RuleError, match=r"hl7v2\.yaml:\d+: .*events\.A03\.status"):
        V2Tables.load(broken)
    assert V2Tables.load().identifiers.visit_system == VISIT


def test_bad_escapes_are_read_and_their_text_kept_out_of_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An empty or unknown escape sequence does not stop the message, and python-hl7's own
    log line about it does not carry the field's text (it may be PHI)."""
    message = read_adt(adt(pv1={14: "SECRET\\\\X", 3: "WARD\\Zsecret\\"}))
    assert message.encounter["hospitalization"]["admitSource"]["coding"][0]["code"] == "SECRETX"
    assert caplog.records and all("SECRET" not in r.getMessage().upper() for r in caplog.records)
