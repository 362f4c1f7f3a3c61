"""Two ``fhirbridge hl7 --listen`` processes and a ``fhirbridge run`` worker on one PostgreSQL
journal, against sekmet behind a loopback proxy adding 50 ms a request, as a deployment runs
them: each listener is a worker of the shared journal (neither refused by a writer lock), a
discharge sent to one of them is written once, whichever worker holds its patient's lane,
and SIGTERM stops all three with exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.workers import POSTGRES, journal_schema, postgres_url
from benchmarks.writeback import Proxy
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import (
    DISCHARGE_WORK,
    MRN_SYSTEM,
    VISIT_SYSTEM,
    by_code,
    discharge_home,
    engine_tasks,
    identifier,
)

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ack(port: int, message: str) -> str:
    """Send one MLLP frame (waiting for the listener to start) and return the ACK's MSA."""
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except OSError:
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.1)
    with connection:
        connection.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = connection.recv(4096)
            assert chunk, "the listener closed the connection"
            data += chunk
    return data[1:-2].decode().split("\r")[1]


def test_two_listeners_and_a_worker_share_a_journal_behind_a_slow_server(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    url = postgres_url()
    if url is None:
        pytest.skip(f"PostgreSQL does not answer at {POSTGRES} (FHIRBRIDGE_TEST_POSTGRES)")
    patient_id = sekmet.register_patient(birth_date="1950-03-04")
    encounter_id = sekmet.admit(patient_id)
    mrn = identifier(sekmet.read("Patient", patient_id), MRN_SYSTEM)
    visit = identifier(sekmet.read("Encounter", encounter_id), VISIT_SYSTEM)
    proxy = Proxy(sekmet.base_url, 0.05)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    processes: list[subprocess.Popen[str]] = []
    try:
        with journal_schema(url, prefix="fhirbridge_hl7w") as schema:
            config = tmp_path / "fhirbridge.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "fhir": {"base_url": proxy.base_url, "name": "sekmet"},
                        "store": {
                            "url": f"{url}?options=-csearch_path%3D{schema}",
                            "lease_seconds": 3,
                        },
                        "engine": {"poll_interval": 0.5, "stop_grace": 10},
                    }
                )
            )
            base = [sys.executable, "-m", "fhirbridge", "--config", str(config)]
            ports = [_free_port(), _free_port()]
            for port in ports:
                processes.append(
                    subprocess.Popen(
                        [*base, "hl7", "--listen", f"127.0.0.1:{port}"],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=env,
                    )
                )
            processes.append(
                subprocess.Popen(
                    [*base, "run"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
            assert _ack(ports[0], discharge_home(mrn, visit)).split("|")[1] == "AA"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if set(by_code(engine_tasks(sekmet, patient_id))) >= DISCHARGE_WORK:
                    break
                assert all(p.poll() is None for p in processes), "a process exited early"
                time.sleep(0.3)
            time.sleep(1.5)  # several more passes of every process, then the stop
            for process in processes:
                process.send_signal(signal.SIGTERM)
            outcomes = [process.communicate(timeout=60) for process in processes]
            for process, (_, err) in zip(processes, outcomes, strict=True):
                assert process.returncode == 0, err
                assert "already being written" not in err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        proxy.stop()
    tasks = engine_tasks(sekmet, patient_id)
    assert set(by_code(tasks)) - {"careplan-review"} == DISCHARGE_WORK
    identifiers = [t["identifier"][0]["value"] for t in tasks]
    assert len(identifiers) == len(set(identifiers))  # every Task once
