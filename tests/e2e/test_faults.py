"""Crashes and restarts on a real server: no transition lost, no Task written twice."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer, free_port
from tests.e2e._sekmet import engine_tasks, recent

pytestmark = pytest.mark.e2e


class Crash(Exception):
    """Stands for the process dying at this point."""


def discharged_home(server: SekmetServer) -> str:
    """A patient admitted and discharged home; returns the patient id."""
    patient = server.register_patient()
    server.discharge(server.admit(patient), "home")
    return patient


async def test_crash_between_journal_and_writeback(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Polled and planned, then the process dies before writing: the restart writes the
    planned Tasks, once."""
    patient = discharged_home(sekmet)
    first = make_bridge()
    await first.poller().poll(recent())
    await first.process()
    planned = first.store.outbox_items("pending")
    # TCM contact and visit, medication reconciliation, coverage review (no Coverage)
    assert sorted(i.kind for i in planned).count("create-task") == 4
    await first.aclose()  # the crash: nothing was written
    assert engine_tasks(sekmet, patient) == []

    second = make_bridge()
    await second.run_once(since=recent())
    assert len(engine_tasks(sekmet, patient)) == 5  # and the new CarePlan's first review
    assert second.store.outbox_depth() == 0


async def test_crash_after_journal_before_processing(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Journalled but not processed: the restart processes it (the watermark had moved, the
    pending version was not lost)."""
    patient = discharged_home(sekmet)
    first = make_bridge()
    await first.poller().poll(recent())
    assert first.store.pending()
    await first.aclose()
    second = make_bridge()
    await second.run_once()  # from the watermark: the server has nothing newer
    assert len(engine_tasks(sekmet, patient)) == 5


async def test_crash_after_the_server_write_before_the_outbox_noted_it(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit's transaction reached the server but the process died before marking the
    writes done: the restart performs the unit again and the conditional creates find all
    its Tasks (the per-resource path has its own test in test_write_units.py)."""
    patient = discharged_home(sekmet)
    first = make_bridge()

    def die(item_id: int, result: object) -> None:
        raise Crash

    monkeypatch.setattr(first.store, "finish_outbox", die)
    with pytest.raises(Crash):
        await first.run_once(since=recent())
    await first.aclose()
    assert len(engine_tasks(sekmet, patient)) == 4

    second = make_bridge()
    stats = await second.run_once(since=recent())
    # the discharge's four Tasks found again; the sweep plans the CarePlan's first review
    assert stats.existing == 4 and stats.created == 1
    tasks = engine_tasks(sekmet, patient)
    assert len(tasks) == 5
    assert len({t["identifier"][0]["value"] for t in tasks}) == 5
    careplan = sekmet.search("CarePlan", {"patient": f"Patient/{patient}"})[0]
    assert len(careplan["activity"]) == 5


def test_cli_run_exits_non_zero_with_one_line_when_the_server_is_down(tmp_path: Path) -> None:
    """`run --once` against an unreachable server: retried, then exit 3 and one clear line."""
    config = tmp_path / "fhirbridge.yaml"
    port = free_port()
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {
                    "base_url": f"http://127.0.0.1:{port}/fhir",
                    "retry": {"attempts": 2, "initial": 0.01, "max_backoff": 0.02},
                },
                "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhirbridge",
            "--config",
            str(config),
            "run",
            "--once",
            "--new-journal",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fhirbridge: error: cannot reach the FHIR server")
