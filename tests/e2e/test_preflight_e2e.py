"""`fhirbridge check` as a preflight against the test server: credentials really used,
a test write made and removed, a JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fhirbridge.testing.sekmet import SekmetServer

pytestmark = pytest.mark.e2e


def check(
    config: dict[str, object], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run `fhirbridge check` as a user would, with ``config`` written to a file."""
    path = tmp_path / "fhirbridge.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "fhirbridge", "--config", str(path), "check", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )


@pytest.fixture
def guarded(tmp_path: Path) -> object:
    """A sekmet server that answers only the bearer token ``good-token``."""
    with SekmetServer.start(
        tmp_path / "sekmet", auth={"types": ["bearer"], "tokens": ["good-token"]}
    ) as server:
        yield server


def _config(server: SekmetServer, tmp_path: Path, token: str) -> dict[str, object]:
    return {
        "fhir": {"base_url": server.base_url, "auth": {"type": "bearer", "token": token}},
        "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
    }


def test_check_fails_on_a_wrong_token(guarded: SekmetServer, tmp_path: Path) -> None:
    """The public /metadata answers, but the authenticated searches get 401: exit 1, naming
    the failing rows."""
    result = check(_config(guarded, tmp_path, "wrong-token"), tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "authenticated search" in result.stderr
    assert "no or wrong credentials" in result.stdout


def test_check_passes_with_the_right_token_and_leaves_nothing(
    guarded: SekmetServer, tmp_path: Path
) -> None:
    """With the right token every row passes, --json reports declared/probed per row, and the
    test write is gone from the server afterwards."""
    result = check(_config(guarded, tmp_path, "good-token"), tmp_path, "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    sources = {row["name"]: row["source"] for row in report["rows"]}
    assert sources["test write (create, read, delete)"] == "probed"
    assert sources["versioned update (If-Match)"] == "declared"
    assert report["profile"]["write_path"] in ("transaction", "per-resource")
    left = guarded.search("Basic", {"_tag": "https://fhirbridge.dev/fhir/tag|probe"})
    assert left == []


def test_check_names_the_url_when_nothing_listens(tmp_path: Path) -> None:
    """A port where nothing listens fails fast with the URL in the message."""
    from fhirbridge.testing.sekmet import free_port

    base = f"http://127.0.0.1:{free_port()}/fhir"
    result = check({"fhir": {"base_url": base}, "store": {"url": "memory://"}}, tmp_path)

    assert result.returncode == 1
    assert f"cannot reach the FHIR server at {base}/metadata" in result.stdout
