"""`fhirbridge --version` and `fhirbridge check` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fhirbridge import __version__
from fhirbridge.fhir.capabilities import assess
from fhirbridge.testing.sekmet import SekmetServer

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line in a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "fhirbridge", *args], capture_output=True, text=True, env=env
    )


def test_version() -> None:
    """`--version` prints the package version."""
    result = cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_check_reports_what_sekmet_offers(sekmet: SekmetServer, tmp_path: Path) -> None:
    """The shipped example configuration, pointed at the server by the environment override,
    passes `check`, and the table names every capability the engine looks for."""
    env_base = {"FHIRBRIDGE_FHIR__BASE_URL": sekmet.base_url}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}, **env_base}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhirbridge",
            "--config",
            str(ROOT / "examples/sekmet.yaml"),
            "check",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for row in (
        "FHIR version R4",
        "Encounter: search by _lastUpdated",
        "conditional create",
        "versioned update",
        "transactions",
        "R4 rest-hook subscriptions",
        "topic-based subscriptions",
        "bulk export",
        "SMART Backend Services",
    ):
        line = next(text for text in result.stdout.splitlines() if row in text)
        assert " yes " in line, line


def test_a_server_without_conditional_create_fails_the_check() -> None:
    """A required capability missing makes the row MISSING-worthy (not ok, required)."""
    statement = {
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": [{"type": "Task", "versioning": "versioned"}]}],
    }
    rows = {r.name: r for r in assess(statement, watched=["Task"])}
    assert rows["conditional create (Task)"].required
    assert not rows["conditional create (Task)"].ok
    assert not rows["versioned update (If-Match)"].ok


def test_a_bad_configuration_is_one_line_naming_the_key(tmp_path: Path) -> None:
    """A configuration error exits 2 with the file, the key and the problem on one line."""
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"fhir": {"base_url": "ftp://nowhere"}}))
    result = cli("--config", str(config), "check")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(config) in line and "fhir.base_url" in line
