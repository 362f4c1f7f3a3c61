"""Real-time discharge feeds, end to end on a real sekmet server: the engine subscribes (R4
rest-hook and topic-based), sekmet notifies the receiver, and the TCM Tasks appear through
notifications alone; a receiver killed right after acknowledging loses nothing and a restart
writes each Task exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from fhirbridge.config import Config, load_config
from fhirbridge.engine import Bridge
from fhirbridge.receiver import Receiver, create_app
from fhirbridge.store import SqliteStore
from fhirbridge.subscriptions import ensure_subscriptions, list_subscriptions
from fhirbridge.testing.sekmet import SekmetServer, free_port
from tests.e2e._sekmet import DISCHARGE_WORK, engine_tasks

pytestmark = pytest.mark.e2e
SECRET = "e2e-notify-secret"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/encounter-complete"


def receiver_config(sekmet: SekmetServer, tmp_path: Path, port: int) -> dict[str, Any]:
    """A configuration (as data) for the engine on ``sekmet`` receiving on ``port``."""
    return {
        "fhir": {"base_url": sekmet.base_url, "name": "sekmet", "retry": {"attempts": 2}},
        "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
        "engine": {"default_owner": "Organization/care-coordination"},
        "receiver": {
            "host": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "secret": SECRET,
            "poll_interval": 3600,
        },
        "subscriptions": [
            {"criteria": "Encounter?status=finished", "payload": "full-resource"},
            {"topic": TOPIC, "payload": "id-only", "heartbeat": 30},
        ],
    }


def discharge_codes(tasks: list[dict[str, Any]]) -> list[str]:
    """The sorted codes of a discharge's Tasks (the CarePlan's review, which a sweep may or
    may not have planned yet, aside)."""
    codes = (t["code"]["coding"][0]["code"] for t in tasks)
    return sorted(c for c in codes if c != "careplan-review")


async def wait_for_tasks(sekmet: SekmetServer, patient: str, count: int, within: float) -> float:
    """Poll the server until the patient has ``count`` engine Tasks; returns when (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if len(await asyncio.to_thread(engine_tasks, sekmet, patient)) >= count:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {count} Tasks for Patient/{patient} within {within} s")


def notifications(receiver: Receiver, kind: str) -> float:
    """How many notifications of one type the receiver has counted (any outcome)."""
    lines = receiver.metrics.render().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("fhirbridge_notifications_received_total{") and f'type="{kind}"' in line
    )


async def wait_for_notifications(receiver: Receiver, kinds: tuple[str, ...], within: float) -> None:
    """Wait until the receiver has counted a notification of each of ``kinds``."""
    async with asyncio.timeout(within):
        while not all(notifications(receiver, kind) for kind in kinds):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@asynccontextmanager
async def receiving(config: Config) -> AsyncIterator[Receiver]:
    """The receiver app under uvicorn, in this event loop, on the configured port."""
    async with Bridge.from_config(config) as bridge:
        app = create_app(bridge, secret=SECRET, max_body=config.receiver.max_body)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=config.receiver.port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "the receiver did not start"
            await asyncio.sleep(0.01)
        try:
            yield app.state.receiver
        finally:
            server.should_exit = True
            await task


async def test_discharge_reaches_tasks_through_notifications_alone(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """Both subscription styles become active on sekmet (a second ensure, by the API or by
    `fhirbridge subscribe`, changes nothing); a discharge in sekmet makes it notify the
    receiver, which writes the TCM contact and visit Tasks once, without any poll (the
    discharge-to-Tasks latency is printed); `subscribe --delete` removes both."""
    data = receiver_config(sekmet, tmp_path, free_port())
    config_file = tmp_path / "fhirbridge.yaml"
    config_file.write_text(yaml.safe_dump(data))
    config = load_config(config_file)
    patient = await asyncio.to_thread(sekmet.register_patient)
    encounter = await asyncio.to_thread(sekmet.admit, patient)
    async with receiving(config) as receiver:
        bridge = receiver.bridge
        made = await ensure_subscriptions(bridge, config)
        assert [(s["style"], s["payload"], s["status"], s["action"]) for s in made] == [
            ("r4", "full-resource", "active", "created"),
            ("topic", "id-only", "active", "created"),
        ]
        again = await ensure_subscriptions(bridge, config)
        assert [s["action"] for s in again] == ["unchanged", "unchanged"]
        assert [s["id"] for s in again] == [s["id"] for s in made]
        cli = await asyncio.to_thread(run_cli, config_file, "subscribe")
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.count(" active ") == 2 and cli.stdout.count("unchanged") == 2

        started = time.monotonic()
        await asyncio.to_thread(sekmet.discharge, encounter, "home")
        done = await wait_for_tasks(sekmet, patient, 4, within=20)
        print(f"\ndischarge -> TCM Tasks readable via notifications: {done - started:.3f} s")
        # sekmet delivers the two styles separately: the Tasks may come from the first
        await wait_for_notifications(receiver, ("rest-hook", "event-notification"), within=20)
        await receiver.settle()

        tasks = await asyncio.to_thread(engine_tasks, sekmet, patient)
        assert discharge_codes(tasks) == sorted(DISCHARGE_WORK)
        metrics = receiver.metrics.render().decode()
        assert 'type="rest-hook"} 1.0' in metrics
        assert 'type="event-notification"} 1.0' in metrics
        assert "fhirbridge_catch_ups_total{" not in metrics  # no poll at all

        assert len(await list_subscriptions(bridge)) == 2
        deleted = await asyncio.to_thread(run_cli, config_file, "subscribe", "--delete")
        assert deleted.returncode == 0 and deleted.stdout.count("deleted") == 2
        assert await list_subscriptions(bridge) == []


def run_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``fhirbridge --config FILE ARGS...`` to completion."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    command = [sys.executable, "-m", "fhirbridge", "--config", str(config_path), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def start_serve(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """``fhirbridge serve --no-poll`` as a child process, its output in ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    command = [sys.executable, "-m", "fhirbridge", "--config", str(config_path), "serve"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*command, "--no-poll", "--new-journal"], stdout=out, stderr=out, env=env
        )


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (at most 30 s) until the child answers /healthz."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"fhirbridge serve did not start:\n{log.read_text()}")


def test_kill_after_ack_loses_nothing_and_writes_once(sekmet: SekmetServer, tmp_path: Path) -> None:
    """`fhirbridge serve` acknowledges a discharge notification and is killed (-9) at once:
    the version is in the journal; after a restart the TCM Tasks appear exactly once, a
    repeated delivery changes nothing, and SIGTERM ends the process with exit code 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config_path = tmp_path / "fhirbridge.yaml"
    data = receiver_config(sekmet, tmp_path, port)
    data.pop("subscriptions")
    config_path.write_text(yaml.safe_dump(data))
    log = tmp_path / "serve.log"
    patient = sekmet.register_patient()
    encounter = sekmet.discharge(sekmet.admit(patient), "home")
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/fhir+json"}
    body = json.dumps(encounter)

    first = start_serve(config_path, log)
    try:
        wait_healthy(url, first, log)
        answer = httpx.put(
            f"{url}/notify/Encounter/{encounter['id']}", content=body, headers=headers
        )
        first.kill()
        assert answer.status_code == 200
    finally:
        first.kill()
        first.wait(10)
    journal = SqliteStore(tmp_path / "journal.db")
    try:  # acknowledged means journalled: pending, or already processed
        pending = [v.id for v in journal.pending() if v.resource_type == "Encounter"]
        snapshot = journal.snapshot("sekmet", "Encounter", encounter["id"])
        assert pending == [encounter["id"]] or snapshot is not None
    finally:
        journal.close()

    second = start_serve(config_path, log)
    try:
        wait_healthy(url, second, log)
        deadline = time.monotonic() + 20
        while len(engine_tasks(sekmet, patient)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        again = httpx.put(
            f"{url}/notify/Encounter/{encounter['id']}", content=body, headers=headers
        )
        assert again.status_code == 200  # acknowledged: durable in the journal
        # SIGTERM stops the receiver gracefully: its worker finishes the pass in progress and
        # one more for whatever is pending, so whatever the repeat caused is done at exit
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, log.read_text()
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    journal = SqliteStore(tmp_path / "journal.db")
    try:  # nothing was left undone at exit, so the Tasks below are the final state
        assert journal.pending() == [] and journal.outbox_depth() == 0
    finally:
        journal.close()
    tasks = engine_tasks(sekmet, patient)
    assert discharge_codes(tasks) == sorted(DISCHARGE_WORK)
