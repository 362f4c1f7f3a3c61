"""`fhirbridge run` as the long-running service a deployment runs: several passes, work
found between them, operations endpoints, JSON logs, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import DISCHARGE_WORK, engine_tasks

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def unit_command() -> tuple[list[str], dict[str, str]]:
    """The arguments and environment of the shipped systemd unit's ExecStart (after the
    program), which the container image runs too."""
    args: list[str] = []
    env: dict[str, str] = {}
    for line in (ROOT / "deploy/fhirbridge.service").read_text().splitlines():
        if line.startswith("ExecStart="):
            args = line.removeprefix("ExecStart=").split()[1:]
        elif line.startswith("Environment=FHIRBRIDGE_"):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    return args, env


def image_command() -> tuple[list[str], dict[str, str]]:
    """The arguments (ENTRYPOINT's program aside) and FHIRBRIDGE_* environment of the image."""
    text = (ROOT / "deploy/Dockerfile").read_text().replace("\\\n", " ")
    args: list[str] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CMD "):
            args = json.loads(line.removeprefix("CMD "))
        elif line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key, _, value = pair.partition("=")
                if key.startswith("FHIRBRIDGE_"):
                    env[key] = value
    return args, env


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    """Wait (at most 60 s) until ``check()`` holds while the process lives."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited while waiting for {what}"
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status(url: str) -> int:
    """The HTTP status of a GET, 0 when nothing answers."""
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def write_config(sekmet: SekmetServer, tmp_path: Path) -> Path:
    """A configuration polling the test server every half second."""
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": sekmet.base_url, "retry": {"attempts": 2}},
                "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
                "engine": {
                    "poll_interval": 0.5,
                    "default_owner": "Organization/care-coordination",
                    "timezone": "UTC",
                },
            }
        )
    )
    return config


def events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log events among the stderr lines."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_the_unit_and_the_image_run_the_same_command() -> None:
    """The systemd unit and the container image start the same command with the same
    settings (the image also listens on every interface)."""
    unit_args, unit_env = unit_command()
    image_args, image_env = image_command()
    assert unit_args == image_args == ["run"]
    shared = {k: v for k, v in image_env.items() if k != "FHIRBRIDGE_RUN_METRICS_HOST"}
    assert {k: unit_env[k] for k in shared} == shared


def test_run_polls_for_several_passes_and_stops_cleanly_on_sigterm(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """The shipped unit's command, after `fhirbridge init`, keeps polling: a discharge made
    while it runs gets its Tasks; /healthz, /readyz and /metrics answer; each pass logs one
    JSON `run_pass` event with a run id; SIGTERM ends it with exit code 0 and nothing is
    written twice."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    fhirbridge = [sys.executable, "-m", "fhirbridge"]
    subprocess.run(
        [*fhirbridge, "init", "--dir", str(tmp_path), "--base-url", sekmet.base_url],
        env=clean,
        check=True,
        capture_output=True,
    )
    port = free_port()
    args, unit_env = unit_command()
    env = {
        **clean,
        **{k: v for k, v in unit_env.items() if "AUTH" not in k},
        "FHIRBRIDGE_CONFIG": str(tmp_path / "fhirbridge.yaml"),
        "FHIRBRIDGE_RUN_METRICS_PORT": str(port),
        "FHIRBRIDGE_ENGINE__POLL_INTERVAL": "0.5",
        "FHIRBRIDGE_ENGINE__TIMEZONE": "UTC",
    }
    command = [*fhirbridge, *args]
    service = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("readiness", lambda: status(f"{base}/readyz") == 200, service)
        assert status(f"{base}/healthz") == 200
        patient = sekmet.register_patient()
        encounter = sekmet.admit(patient)
        sekmet.discharge(encounter, "home")

        def tasks() -> list[dict[str, Any]]:
            return engine_tasks(sekmet, patient)

        def codes() -> set[str]:
            return {t["code"]["coding"][0]["code"] for t in tasks()}

        # the discharge's work; a sweep may add the new CarePlan's first review
        wait_for("the discharge's Tasks", lambda: codes() >= DISCHARGE_WORK, service)

        def metrics() -> str:
            return httpx.get(f"{base}/metrics", timeout=2).text

        wait_for(
            "the pass's figures",
            lambda: f"tasks_created_total {float(len(tasks()))}" in metrics(),
            service,
        )
        assert 'fhirbridge_passes_total{outcome="ok"}' in metrics()
        assert status(f"{base}/nothing-here") == 404

        def passes() -> float:
            for line in metrics().splitlines():
                if line.startswith('fhirbridge_passes_total{outcome="ok"}'):
                    return float(line.split()[-1])
            return 0.0

        seen = passes()  # then two more passes over an unchanged server
        wait_for("two more passes", lambda: passes() >= max(seen + 2, 3), service)
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    passes = [e for e in events(err) if e.get("event") == "run_pass"]
    assert len(passes) >= 3
    assert all(e["run_id"] for e in passes)
    assert len({e["run_id"] for e in passes}) == len(passes)
    written = tasks()
    assert sum(e["created"] for e in passes) == len(written)
    assert any(e.get("event") == "service_stopped" for e in events(err))
    assert codes() - {"careplan-review"} == DISCHARGE_WORK
    assert len(written) == len(codes())  # nothing written twice


def test_run_refuses_a_journal_that_does_not_exist(sekmet: SekmetServer, tmp_path: Path) -> None:
    """A journal path that does not exist (a typo) is refused with exit 4 and one line that
    names the path and the way to start a new one; nothing is created."""
    config = write_config(sekmet, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "fhirbridge", "run", "--once", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4
    assert "journal.db does not exist" in result.stderr
    assert "--new-journal" in result.stderr
    assert not (tmp_path / "journal.db").exists()
