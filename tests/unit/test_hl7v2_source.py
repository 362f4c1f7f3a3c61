"""The HL7 v2 source: splitting streams, finding what messages name on the FHIR server (an
in-memory fake behind ``httpx.MockTransport``), journalling, dead letters, ACKs, and the
MLLP listener acknowledging only what is durable (a temporary SQLite journal)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from fhirbridge.engine import Bridge
from fhirbridge.errors import ServerError, StoreError
from fhirbridge.sources.hl7v2 import (
    MllpListener,
    RawMessage,
    V2Adapter,
    build_ack,
    ingest_hl7,
    split_messages,
)
from fhirbridge.store import MemoryStore, SqliteStore
from fhirbridge.values import ResourceVersion
from tests._builders.hl7 import (
    CR,
    DATA,
    MRN,
    VISIT,
    FakeFhir,
    adt,
    exchange,
    make_bridge,
    msa,
    reasons,
)


@pytest.fixture
async def bridge(fhir: FakeFhir) -> AsyncIterator[Bridge]:
    """An engine over an in-memory journal."""
    engine = make_bridge(fhir, MemoryStore())
    yield engine
    await engine.aclose()


def raw(text: str) -> RawMessage:
    """A message as the splitter hands it over."""
    return split_messages(text.encode())[0]


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("sample_batch1.hl7", 2),  # BHS ... BTS around two messages
        ("sample_file1.hl7", 3),  # FHS, two batches
        ("ADT01-23.hl7", 1),  # BOM and LF separators
    ],
)
def test_batches_and_files_split_into_their_messages(name: str, count: int) -> None:
    """Envelopes are dropped; every message starts with its MSH and uses CR separators."""
    messages = split_messages((DATA / name).read_bytes())
    assert len(messages) == count
    assert all(m.data.startswith(b"MSH|") and b"\n" not in m.data and not m.error for m in messages)


def test_mllp_framing_and_any_line_ending_are_accepted() -> None:
    """VT/FS bytes around messages, CRLF or LF between segments: the same messages."""
    text = adt(control="A") + adt(control="B")
    framed = b"\x0b" + adt(control="A").encode() + b"\x1c\r\x0b" + adt(control="B").encode()
    crlf = text.replace(CR, "\r\n").encode()
    assert split_messages(framed) == split_messages(crlf) == split_messages(text.encode())
    assert len(split_messages(framed)) == 2


def test_segments_outside_any_message_come_back_as_an_error_chunk() -> None:
    """A second BHS inside a batch cuts the message (python-hl7's sample_bad_batch1); the
    orphan segments are kept, with the reason, for the dead letters."""
    messages = split_messages((DATA / "sample_bad_batch1.hl7").read_bytes())
    assert [bool(m.error) for m in messages] == [False, True]
    assert messages[1].error.startswith("PID, PD1, NK1, PV1 segment(s) outside any message")
    (only,) = split_messages((DATA / "sample_bad_file3.hl7").read_bytes())
    assert only.error.startswith("EVN, PID")


async def test_a_discharge_becomes_a_new_version_of_the_servers_encounter(
    bridge: Bridge, fhir: FakeFhir
) -> None:
    """Found by visit number and MRN; journalled with the server's id and subject, versionId
    v2:<MSH-10>, lastUpdated MSH-7; a repeat is the same version and adds nothing."""
    text = adt("A03", pv1={36: "01", 45: "20261224150000-0500"})
    adapter = V2Adapter(bridge)
    outcome = await adapter.handle(raw(text))
    assert outcome.ack == "AA" and outcome.control_id == "CTRL1"
    (version,) = outcome.versions
    assert (version.reference, version.version_id) == (
        "Encounter/enc-1",
        "v2:A03:CTRL1:20261224150000",
    )
    assert version.last_updated == "2026-12-24T15:00:00-05:00"
    assert version.resource["status"] == "finished"
    assert version.resource["subject"] == {"reference": "Patient/pat-1"}
    assert [v.version_id for v in bridge.store.pending()] == ["v2:A03:CTRL1:20261224150000"]
    assert f"Encounter?identifier={VISIT.replace(':', '%3A')}%7CV001" in fhir.queries
    again = await adapter.handle(raw(text))
    assert again.ack == "AA" and again.duplicate and again.versions == ()


async def test_the_identifier_systems_are_parameters(bridge: Bridge, fhir: FakeFhir) -> None:
    """--visit-system and --mrn-system replace the defaults of mappings/hl7v2.yaml; values
    are escaped for the token search."""
    fhir.add(
        {
            "resourceType": "Encounter",
            "id": "enc-9",
            "subject": {"reference": "Patient/pat-9"},
            "identifier": [{"system": "urn:x:visit", "value": "V|9"}],
        }
    )
    fhir.add(
        {
            "resourceType": "Patient",
            "id": "pat-9",
            "identifier": [{"system": "urn:x:mrn", "value": "M9"}],
        }
    )
    adapter = V2Adapter(bridge, visit_system="urn:x:visit", mrn_system="urn:x:mrn")
    text = adt("A01", pid={3: "M9^^^X^MR"}, pv1={19: "V\\F\\9"})
    outcome = await adapter.handle(raw(text))
    assert outcome.ack == "AA" and outcome.versions[0].id == "enc-9"
    assert "Encounter?identifier=urn%3Ax%3Avisit%7CV%5C%7C9" in fhir.queries


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (adt(pv1={19: "V404"}), "PV1-19: no Encounter has identifier urn:oid:1.2.3.4.5.2|V404"),
        (
            adt(pid={3: "M404^^^HOSP^MR"}),
            "PID-3: no Patient has identifier urn:oid:1.2.3.4.5.1|M404",
        ),
        (adt(pid={30: "perhaps"}), "PID-30: 'perhaps' is not a yes/no indicator"),
        ((DATA / "ADT-A40-01.hl7").read_text(), "MSH-9: ADT^A40 is not an ADT event handled"),
    ],
)
async def test_what_cannot_be_found_or_read_is_dead_lettered_and_the_run_goes_on(
    bridge: Bridge, text: str, reason: str
) -> None:
    """The reason names the field and what was looked up; the next message still goes in."""
    adapter = V2Adapter(bridge)
    refused = await adapter.handle(split_messages(text.encode())[0])
    assert refused.ack in ("AE", "AR") and refused.reason.startswith(reason)
    (letter,) = bridge.store.dead_letters()
    assert letter.source == "hl7v2" and letter.reason.startswith(reason)
    assert letter.payload.startswith(b"MSH|")
    assert (await adapter.handle(raw(adt("A01", control="NEXT")))).ack == "AA"


async def test_a_visit_of_another_patient_is_refused(bridge: Bridge, fhir: FakeFhir) -> None:
    """PV1-19 and PID-3 must name the same patient on the server."""
    fhir.add(
        {"resourceType": "Patient", "id": "pat-2", "identifier": [{"system": MRN, "value": "M002"}]}
    )
    outcome = await V2Adapter(bridge).handle(raw(adt(pid={3: "M002^^^HOSP^MR"})))
    assert outcome.ack == "AE"
    assert reasons(bridge.store) == [
        "PID-3: Encounter/enc-1 (PV1-19) belongs to Patient/pat-1, "
        "not to Patient/pat-2 found by MRN"
    ]


async def test_a_death_is_journalled_as_a_version_of_the_patient(bridge: Bridge) -> None:
    """PID-30 Y, or an A03 to expired (20), gives the server's Patient, deceased."""
    outcome = await V2Adapter(bridge).handle(raw(adt("A03", pv1={36: "20"})))
    patient = next(v for v in outcome.versions if v.resource_type == "Patient")
    assert (patient.id, patient.version_id) == ("pat-1", "v2:A03:CTRL1:20261224150000")
    assert patient.resource["deceasedBoolean"] is True
    assert patient.resource["identifier"] == [{"system": MRN, "value": "M001"}]


async def test_an_update_after_an_admit_keeps_the_admits_status(
    bridge: Bridge, fhir: FakeFhir
) -> None:
    """The server still says planned; A01 then A08 in one feed: the A08 keeps in-progress."""
    fhir.resources[1]["status"] = "planned"
    adapter = V2Adapter(bridge)
    await adapter.handle(raw(adt("A01", control="1", sent="20261221080000-0500")))
    updated = await adapter.handle(raw(adt("A08", control="2", sent="20261221090000-0500")))
    assert updated.versions[0].resource["status"] == "in-progress"


async def test_ingest_journals_processes_and_counts(bridge: Bridge) -> None:
    """A file with an admit, an unknown visit and an ORU: one version journalled and
    processed (an admission, no work planned), two dead letters; fed again, nothing new."""
    data = (
        adt("A01") + adt(pv1={19: "V404"}, control="X") + (DATA / "sample_hl7.hl7").read_text()
    ).encode()
    stats = await ingest_hl7(bridge, data)
    assert (stats.messages, stats.journalled, stats.dead_letters) == (3, 1, 2)
    assert stats.transitions == 1
    assert bridge.store.snapshot(bridge.server, "Encounter", "enc-1") is not None
    assert "messages 3: journalled 1 new versions" in stats.summary()
    again = await ingest_hl7(bridge, adt("A01").encode())
    assert (again.journalled, again.duplicates) == (0, 1)


async def test_a_failing_server_is_not_a_dead_letter(bridge: Bridge, fhir: FakeFhir) -> None:
    """A 500 while looking up is an error for the caller (a retry may fix it): nothing is
    journalled or dead-lettered."""
    fhir.status = 500
    with pytest.raises(ServerError):
        await ingest_hl7(bridge, adt().encode())
    assert bridge.store.dead_letters() == [] and bridge.store.pending() == []


def test_acks_carry_the_code_control_id_and_escaped_reason() -> None:
    """MSA-1 the code, MSA-2 the message's MSH-10, MSA-3 the reason with HL7 escapes; a
    message too broken to answer in kind still gets a minimal ACK."""
    from datetime import UTC, datetime

    now = datetime(2026, 12, 24, 20, 0, tzinfo=UTC)
    ack = build_ack(raw(adt()), "AE", "PID-3: no Patient has identifier a|b", now).decode()
    msh, msa = ack.rstrip(CR).split(CR)
    assert msh.startswith("MSH|^~\\&|FHIRBRIDGE|HOSP|ADT|HOSP|20261224200000+0000||ACK^A03^ACK|")
    assert msa == "MSA|AE|CTRL1|PID-3: no Patient has identifier a\\F\\b"
    garbage = build_ack(RawMessage(b"PID|1\r", error="stray"), "AR", "stray", now).decode()
    assert garbage.split(CR)[1] == "MSA|AR||stray"


class RecordingStore(SqliteStore):
    """A SQLite journal that notes each append in a shared log (or fails it)."""

    def __init__(self, path: Path, log: list[str], fail: bool = False) -> None:
        super().__init__(path)
        self.log, self.fail = log, fail

    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        if self.fail:
            raise StoreError("disk full")
        new = super().append(versions)
        self.log.append("appended")
        return new


async def test_mllp_acks_only_what_is_durable(fhir: FakeFhir, tmp_path: Path) -> None:
    """The AA comes after the append returned, and the version is in the SQLite file by then
    (a second connection sees it); AE for a visit not found (dead-lettered), AR for a
    garbled frame."""
    log: list[str] = []
    store = RecordingStore(tmp_path / "journal.db", log)
    store.migrate()
    engine = make_bridge(fhir, store)
    listener = MllpListener(engine, process=False)
    port = await listener.start("127.0.0.1", 0)
    try:
        ack = await exchange(port, adt("A03", pv1={45: "20261224150000-0500"}).encode())
        log.append("ack received")
        assert msa(ack)[1:3] == ["AA", "CTRL1"]
        assert log == ["appended", "ack received"]
        reader = SqliteStore(tmp_path / "journal.db")
        assert [v.version_id for v in reader.pending()] == ["v2:A03:CTRL1:20261224150000"]
        reader.close()
        missing = msa(await exchange(port, adt(pv1={19: "V404"}, control="C2").encode()))
        assert missing[1:3] == ["AE", "C2"] and missing[3].startswith("PV1-19: no Encounter")
        garbled = msa(await exchange(port, b"EVN|A03\rPID|1"))
        assert garbled[1] == "AR" and "outside any message" in garbled[3]
        assert len(store.dead_letters()) == 2
        assert (listener.stats.messages, listener.stats.dead_letters) == (3, 2)
    finally:
        await listener.aclose()
        await engine.aclose()


async def test_mllp_answers_ae_when_the_journal_fails(fhir: FakeFhir, tmp_path: Path) -> None:
    """No durable append, no AA: the sender is told to resend, nothing is dead-lettered."""
    store = RecordingStore(tmp_path / "journal.db", [], fail=True)
    store.migrate()
    engine = make_bridge(fhir, store)
    listener = MllpListener(engine, process=False)
    port = await listener.start("127.0.0.1", 0)
    try:
        answer = msa(await exchange(port, adt().encode()))
        assert answer[1] == "AE" and answer[3].startswith("temporary failure, resend: disk full")
        assert store.dead_letters() == []
    finally:
        await listener.aclose()
        await engine.aclose()


async def test_mllp_refuses_an_oversized_frame(bridge: Bridge) -> None:
    """A frame past max_bytes gets AR and the connection is closed."""
    listener = MllpListener(bridge, process=False, max_bytes=1024)
    port = await listener.start("127.0.0.1", 0)
    try:
        answer = msa(await exchange(port, adt(pid={5: "X" * 4000}).encode()))
    finally:
        await listener.aclose()
    assert answer[1] == "AR" and "larger than 1024 bytes" in answer[3]


async def test_mllp_worker_processes_what_was_acknowledged(fhir: FakeFhir, tmp_path: Path) -> None:
    """With processing on, acknowledged versions are processed in the background; closing
    the listener finishes the work."""
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    engine = make_bridge(fhir, store)
    listener = MllpListener(engine)
    port = await listener.start("127.0.0.1", 0)
    try:
        assert msa(await exchange(port, adt("A01").encode()))[1] == "AA"
    finally:
        await listener.aclose()
    assert store.pending() == []
    assert store.snapshot(engine.server, "Encounter", "enc-1") is not None
    assert listener.stats.transitions == 1
    await engine.aclose()
    assert json.loads(json.dumps(listener.stats.summary()))


async def test_an_idle_worker_listener_processes_what_others_journalled(
    fhir: FakeFhir, tmp_path: Path
) -> None:
    """A listener that is a worker among several (``idle_pass`` set) runs a pass when nothing
    arrives, so the versions of its lanes that another process journalled are processed
    without waiting for the next ADT message."""
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    engine = make_bridge(fhir, store)
    other = MllpListener(engine, process=False)  # journals and acknowledges, nothing more
    port = await other.start("127.0.0.1", 0)
    try:
        assert msa(await exchange(port, adt("A01").encode()))[1] == "AA"
    finally:
        await other.aclose()
    assert store.pending() != []
    listener = MllpListener(engine)
    listener.idle_pass = 0.05
    await listener.start("127.0.0.1", 0)
    try:
        for _ in range(400):
            if not store.pending():
                break
            await asyncio.sleep(0.05)
        assert store.pending() == []  # before closing (which finishes the work anyway)
    finally:
        await listener.aclose()
    assert store.snapshot(engine.server, "Encounter", "enc-1") is not None
    await engine.aclose()
