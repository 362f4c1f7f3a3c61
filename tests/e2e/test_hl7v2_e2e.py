"""HL7 v2 ADT end to end, on a real sekmet server: a v2 A03 for a stay sekmet knows becomes
the TCM Tasks on sekmet, referencing sekmet's Encounter and Patient, exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fhirbridge.engine import Bridge
from fhirbridge.sources.hl7v2 import ingest_hl7
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import (
    DISCHARGE_WORK,
    MRN_SYSTEM,
    VISIT_SYSTEM,
    by_code,
    discharge_home,
    engine_tasks,
    identifier,
    recent,
)

pytestmark = pytest.mark.e2e


def admitted_patient(sekmet: SekmetServer) -> tuple[str, str, str, str]:
    """Register and admit a patient in sekmet: (patient id, MRN, encounter id, visit number)."""
    patient_id = sekmet.register_patient(birth_date="1950-03-04")
    encounter_id = sekmet.admit(patient_id)
    mrn = identifier(sekmet.read("Patient", patient_id), MRN_SYSTEM)
    visit = identifier(sekmet.read("Encounter", encounter_id), VISIT_SYSTEM)
    return patient_id, mrn, encounter_id, visit


async def test_a_v2_discharge_writes_the_tcm_tasks_once(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """The A03 is journalled as a new version of sekmet's Encounter, the discharge home gives
    tcm-contact and tcm-visit on sekmet for that Encounter and Patient; the same message again
    writes nothing, and neither does polling sekmet's own (older) versions afterwards."""
    patient_id, mrn, encounter_id, visit = admitted_patient(sekmet)
    message = discharge_home(mrn, visit).encode()

    stats = await ingest_hl7(bridge, message, visit_system=VISIT_SYSTEM, mrn_system=MRN_SYSTEM)
    assert (stats.messages, stats.journalled, stats.dead_letters) == (1, 1, 0)
    # TCM contact and visit, medication reconciliation, coverage review (no Coverage)
    assert stats.created == 4

    tasks = by_code(engine_tasks(sekmet, patient_id))
    assert set(tasks) == DISCHARGE_WORK
    for code, task in tasks.items():
        # the coverage review is about the patient's coverage, the rest about the stay
        stay = f"Encounter/{encounter_id}"
        focus = f"Patient/{patient_id}" if code == "coverage-review" else stay
        assert task["focus"]["reference"] == focus
        assert task["for"]["reference"] == f"Patient/{patient_id}"
    snapshot = bridge.store.snapshot(bridge.server, "Encounter", encounter_id)
    assert snapshot is not None
    assert snapshot.version_id.startswith("v2:A03:E2E0001:")

    again = await ingest_hl7(bridge, message, visit_system=VISIT_SYSTEM, mrn_system=MRN_SYSTEM)
    assert (again.journalled, again.duplicates) == (0, 1)
    assert again.created == 0
    polled = await bridge.run_once(since=recent())
    # nothing more of the discharge; the pass's sweep plans the new CarePlan's first review
    assert polled.created == 1
    assert set(by_code(engine_tasks(sekmet, patient_id))) == DISCHARGE_WORK | {"careplan-review"}


async def test_a_visit_sekmet_does_not_know_is_dead_lettered(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """An unknown visit number writes nothing and keeps the message with the reason."""
    _, mrn, _, _ = admitted_patient(sekmet)
    stats = await ingest_hl7(bridge, discharge_home(mrn, "V-NOT-THERE").encode())
    assert (stats.journalled, stats.dead_letters) == (0, 1)
    (letter,) = bridge.store.dead_letters()
    assert letter.reason == (
        f"PV1-19: no Encounter has identifier {VISIT_SYSTEM}|V-NOT-THERE on server 'sekmet'"
    )


def test_cli_hl7_ingests_a_file(sekmet: SekmetServer, tmp_path: Path) -> None:
    """`fhirbridge hl7 FILE` journals, processes and writes, and prints one line per file."""
    patient_id, mrn, _, visit = admitted_patient(sekmet)
    feed = tmp_path / "adt.hl7"
    feed.write_bytes(discharge_home(mrn, visit).replace("\r", "\n").encode())
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": sekmet.base_url},
                "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhirbridge",
            "--config",
            str(config),
            "hl7",
            "--new-journal",
            str(feed),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert f"{feed}: messages 1: journalled 1 new versions" in ran.stdout
    assert "tasks created 4" in ran.stdout
    assert set(by_code(engine_tasks(sekmet, patient_id))) == DISCHARGE_WORK


def test_cli_hl7_exits_5_when_it_leaves_dead_letters(sekmet: SekmetServer, tmp_path: Path) -> None:
    """A file whose message names no visit on the server: exit 5 and a line pointing at
    `fhirbridge dead-letters`, which shows the message control id and the reason;
    `--allow-dead-letters` makes the same outcome exit 0."""
    _, mrn, _, _ = admitted_patient(sekmet)
    feed = tmp_path / "adt.hl7"
    feed.write_bytes(discharge_home(mrn, "V-NOT-THERE", "CTRL-77").encode())
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": sekmet.base_url},
                "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    command = [sys.executable, "-m", "fhirbridge", "-c", str(config)]
    failed = subprocess.run(
        [*command, "hl7", "--new-journal", str(feed)], capture_output=True, text=True, env=env
    )
    assert failed.returncode == 5, failed.stderr
    assert "fhirbridge dead-letters" in failed.stderr
    shown = subprocess.run(
        [*command, "dead-letters", "--json"], capture_output=True, text=True, env=env, check=True
    )
    (letter,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert (letter["source"], letter["reference"]) == ("hl7v2", "CTRL-77")
    assert "V-NOT-THERE" in letter["reason"]
    feed.write_bytes(discharge_home(mrn, "V-NOT-THERE", "CTRL-78").encode())
    allowed = subprocess.run(
        [*command, "hl7", "--allow-dead-letters", str(feed)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert allowed.returncode == 0, allowed.stderr


def test_cli_hl7_listens_for_mllp_and_acks_once_durable(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """`fhirbridge hl7 --listen` answers MSA|AA for a known visit and AE for an unknown one,
    writes the Tasks in the background, and exits 0 on SIGTERM with a summary."""
    patient_id, mrn, _, visit = admitted_patient(sekmet)
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": sekmet.base_url},
                "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            }
        )
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    command = [sys.executable, "-m", "fhirbridge", "--config", str(config), "hl7", "--new-journal"]
    server = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        connection = connect(port)
        acks = []
        for message in (discharge_home(mrn, visit), discharge_home(mrn, "V-NONE", "E2E0002")):
            connection.sendall(b"\x0b" + message.encode() + b"\x1c\r")
            acks.append(read_frame(connection))
        connection.close()
        assert [a.split("\r")[1].split("|")[1:3] for a in acks] == [
            ["AA", "E2E0001"],
            ["AE", "E2E0002"],
        ]
        deadline = time.monotonic() + 20
        while len(by_code(engine_tasks(sekmet, patient_id))) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    # the listener's sweep may already have planned the new CarePlan's first review
    assert set(by_code(engine_tasks(sekmet, patient_id))) - {"careplan-review"} == DISCHARGE_WORK
    assert "mllp: messages 2: journalled 1 new versions" in out


def connect(port: int) -> socket.socket:
    """Connect to the listener, waiting for it to start."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_frame(connection: socket.socket) -> str:
    """One MLLP frame's content."""
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = connection.recv(4096)
        assert chunk, "the listener closed the connection"
        data += chunk
    return data[1:-2].decode()
