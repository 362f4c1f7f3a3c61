"""Risk scores on a SNOMED CT coded problem list, end to end on a real sekmet server: the
comorbidities count, the unrecognised code is in the score Observation, a death gets no
score, and `check` asks for the facility's zone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import condition, fixed, recent, risk_assessments, set_period

pytestmark = pytest.mark.e2e

SCT = "http://snomed.info/sct"
LOCAL = "https://hospital.example/problem-list"


def problem(server: SekmetServer, patient: str, system: str, code: str, display: str) -> None:
    """An active problem-list Condition with one coding, recorded in 2025."""
    condition(server, patient, code, system=system, display=display, recorded="2025-06-01")


def observation_of(server: SekmetServer, assessment: dict[str, Any]) -> dict[str, Any]:
    """The score Observation a RiskAssessment names first in its basis."""
    return server.read("Observation", assessment["basis"][0]["reference"].split("/")[1])


async def test_snomed_problem_list_scores_its_comorbidities(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Stage-specific lung cancer (listed), bladder cancer (by its term) and heart failure with
    reduced ejection fraction: malignancy 2 + CHF 2 = 4, C 5. Admitted through the ED 21:00
    New York time, discharged 09:00 four days later: L 4 in the facility zone. The local code
    is reported in the Observation's notes."""
    patient = sekmet.register_patient(birth_date="1950-01-01")
    problem(sekmet, patient, SCT, "424132000", "Non-small cell carcinoma of lung, TNM stage 1")
    problem(sekmet, patient, SCT, "399326009", "Malignant neoplasm of urinary bladder")
    problem(sekmet, patient, SCT, "703272007", "Heart failure with reduced ejection fraction")
    problem(sekmet, patient, LOCAL, "PL-77", "Frailty (local)")
    stay = sekmet.admit(patient)
    sekmet.discharge(stay, "home")
    set_period(sekmet, stay, "2026-11-11T02:00:00Z", "2026-11-14T14:00:00Z")

    bridge = make_bridge(clock=fixed("2026-11-15T09:00:00+00:00"), timezone="America/New_York")
    await bridge.run_once(since=recent())

    lace = risk_assessments(sekmet, patient)["lace"]
    observation = observation_of(sekmet, lace)
    components = {
        c["code"]["coding"][0]["code"]: c["valueInteger"] for c in observation["component"]
    }
    assert components == {"lace-L": 4, "lace-A": 3, "lace-C": 5, "lace-E": 0}
    notes = " ".join(n["text"] for n in observation["note"])
    assert f'{LOCAL}|PL-77 "Frailty (local)"' in notes
    assert "chf 2" in notes


async def test_a_death_in_hospital_gets_no_risk_score(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Discharged with disposition expired: no score Observation, no RiskAssessment."""
    patient = sekmet.register_patient(birth_date="1940-01-01")
    problem(sekmet, patient, SCT, "84114007", "Heart failure")
    stay = sekmet.admit(patient)
    sekmet.discharge(stay, "exp")
    set_period(sekmet, stay, "2026-11-10T08:00:00Z", "2026-11-14T15:00:00Z")
    bridge = make_bridge(clock=fixed("2026-11-15T09:00:00+00:00"), timezone="America/New_York")
    await bridge.run_once(since=recent())
    assert risk_assessments(sekmet, patient) == {}


def test_check_warns_when_the_facility_zone_is_unset(sekmet: SekmetServer, tmp_path: Path) -> None:
    """`check` prints one warning line naming engine.timezone when it is unset, none when set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}

    def check(engine: dict[str, Any]) -> str:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"fhir": {"base_url": sekmet.base_url}, "engine": engine}))
        result = subprocess.run(
            [sys.executable, "-m", "fhirbridge", "--config", str(config), "check"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    unset = [line for line in check({}).splitlines() if line.startswith("warning:")]
    assert len(unset) == 1 and "engine.timezone" in unset[0]
    assert "warning:" not in check({"timezone": "America/New_York"})
