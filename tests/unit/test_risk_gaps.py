"""The scores' gaps: deaths get no score, the facility zone is asked for, the oncology units
are configurable, and the Observation and plan say what the score did not recognise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog

from fhirbridge.config import RiskConfig, load_config
from fhirbridge.errors import ConfigError
from fhirbridge.risk import hospital, lace, score_observation
from fhirbridge.risk.eligibility import DIED_IN_HOSPITAL, not_scored_reason
from fhirbridge.risk.findings import score_details
from fhirbridge.risk.zone import (
    facility_zone,
    reset_timezone_warning,
    timezone_warning,
    warn_timezone_unset,
)
from fhirbridge.riskplan import score, score_actions
from fhirbridge.values import Transition, TransitionKind
from tests.unit._risk_builders import build_encounter

DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
NUBC = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
SCT = "http://snomed.info/sct"
LOCAL = "https://hospital.example/problem-list"
START = datetime(2024, 3, 1, 10, tzinfo=UTC)


def stay(disposition: tuple[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """A finished four-day stay of Patient/p1, 1-5 March 2024."""
    return build_encounter(start=START, days=4, disposition=disposition, **extra)


def inputs(conditions: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """What riskplan.fetch_inputs returns, without a server."""
    return {"conditions": conditions or [], "encounters": [], "observations": [], "procedures": []}


# -- deaths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "patient", "reason"),
    [
        # FHIR's "expired" and NUBC's 20 (expired) are deaths
        pytest.param((DISPOSITION, "exp"), None, DIED_IN_HOSPITAL, id="exp"),
        pytest.param((NUBC, "20"), None, DIED_IN_HOSPITAL, id="nubc-20"),
        # deceased by the discharge date, whatever the disposition
        pytest.param(None, {"deceasedBoolean": True}, DIED_IN_HOSPITAL, id="deceased-boolean"),
        pytest.param(
            None,
            {"deceasedDateTime": "2024-03-05T08:00:00Z"},
            DIED_IN_HOSPITAL,
            id="died-at-discharge",
        ),
        # died after going home: the stay ended alive and is scored
        pytest.param(None, {"deceasedDateTime": "2024-04-20"}, None, id="died-later"),
        pytest.param((DISPOSITION, "home"), {"deceasedBoolean": False}, None, id="home"),
        pytest.param(None, None, None, id="nothing-known"),
    ],
)
def test_deaths_in_hospital_are_not_scored(
    disposition: tuple[str, str] | None, patient: dict[str, Any] | None, reason: str | None
) -> None:
    """An expired disposition, or a patient deceased by the discharge, means no score."""
    assert not_scored_reason(stay(disposition), patient) == reason


def test_no_risk_work_is_planned_for_a_death() -> None:
    """riskplan.score gives no scores (so no Observation, no RiskAssessment) for a death."""
    assert score(stay((DISPOSITION, "exp")), inputs(), UTC) == {}
    assert set(score(stay((DISPOSITION, "home")), inputs(), UTC)) == {"lace", "hospital"}
    died = {"resourceType": "Patient", "id": "p1", "deceasedDateTime": "2024-03-04"}
    assert score(stay(), inputs(), UTC, patient=died) == {}


# -- the facility zone -------------------------------------------------------------------------


def test_the_zone_warning_names_the_key_and_the_zone_used() -> None:
    """One line, with the key to set; nothing when the zone is set."""
    line = timezone_warning(None)
    assert line is not None and "engine.timezone" in line and "UTC" in line
    assert "America/Chicago" in (timezone_warning(None, fallback="America/Chicago") or "")
    assert timezone_warning("America/New_York") is None


def test_the_zone_warning_is_logged_once() -> None:
    """warn_timezone_unset logs risk_timezone_unset the first time only."""
    reset_timezone_warning()
    with structlog.testing.capture_logs() as logs:
        assert warn_timezone_unset(None) is True
        assert warn_timezone_unset(None) is False
        assert warn_timezone_unset("Europe/Paris") is False
    events = [e for e in logs if e["event"] == "risk_timezone_unset"]
    assert len(events) == 1 and events[0]["key"] == "engine.timezone"
    reset_timezone_warning()


def test_facility_zone() -> None:
    """The configured zone, else the fallback, else UTC; an unknown name is a ConfigError."""
    assert facility_zone("America/New_York") == ZoneInfo("America/New_York")
    assert facility_zone(None, fallback="Europe/Paris") == ZoneInfo("Europe/Paris")
    assert facility_zone(None) is UTC
    with pytest.raises(ConfigError, match=r"engine\.timezone"):
        facility_zone("Mars/Olympus")


def test_length_of_stay_changes_with_the_zone() -> None:
    """Admitted 21:30 on 1 March and discharged 10:00 on 4 March in New York: 3 days there, 2
    on UTC dates (2 March 02:30Z to 4 March 15:00Z), which moves L from 3 to 2 points."""
    evening = build_encounter(start="2024-03-02T02:30:00Z", days=None, end="2024-03-04T15:00:00Z")
    assert lace(evening, tz=ZoneInfo("America/New_York")).components["L"] == 3
    assert lace(evening, tz=UTC).components["L"] == 2


# -- oncology ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "kwargs", "points"),
    [
        # no service coded, the provider is the configured oncology organization
        pytest.param(
            {"serviceProvider": {"reference": "Organization/cancer-centre"}},
            {"oncology_organizations": ["Organization/cancer-centre"]},
            2,
            id="organization",
        ),
        # a bare id or a full URL names the same organization
        pytest.param(
            {"serviceProvider": {"reference": "https://ehr.example/fhir/Organization/cc"}},
            {"oncology_organizations": ["cc"]},
            2,
            id="organization-by-id",
        ),
        # the discharge location is the oncology ward (the last location of the stay)
        pytest.param(
            {
                "location": [
                    {
                        "location": {"reference": "Location/ed"},
                        "period": {"start": "2024-03-01T10:00:00Z"},
                    },
                    {
                        "location": {"reference": "Location/onc-4"},
                        "period": {"start": "2024-03-02T10:00:00Z"},
                    },
                ]
            },
            {"oncology_locations": ["Location/onc-4"]},
            2,
            id="location",
        ),
        # the oncology ward earlier in the stay is not the discharge service
        pytest.param(
            {
                "location": [
                    {
                        "location": {"reference": "Location/onc-4"},
                        "period": {"start": "2024-03-01T10:00:00Z"},
                    },
                    {
                        "location": {"reference": "Location/med-2"},
                        "period": {"start": "2024-03-02T10:00:00Z"},
                    },
                ]
            },
            {"oncology_locations": ["Location/onc-4"]},
            0,
            id="earlier-location",
        ),
        # another organization: no points, but the service is known
        pytest.param(
            {"serviceProvider": {"reference": "Organization/general"}},
            {"oncology_organizations": ["Organization/cancer-centre"]},
            0,
            id="other-organization",
        ),
    ],
)
def test_oncology_units_are_configurable(
    extra: dict[str, Any], kwargs: dict[str, Any], points: int
) -> None:
    """HOSPITAL's O scores from the configured organizations and locations when no service is
    coded on the Encounter."""
    result = hospital(stay(**extra), **kwargs)
    assert result.components["O"] == points
    assert "service" in result.found


def test_risk_oncology_configuration_reaches_the_score() -> None:
    """`risk.oncology` in the configuration file is what riskplan.score passes on."""
    config = load_config(
        data={
            "fhir": {"base_url": "http://localhost"},
            "risk": {"oncology": {"organizations": ["Organization/cc"], "services": ["394593009"]}},
        }
    )
    assert config.risk.oncology.organizations == ["Organization/cc"]
    encounter = stay(serviceProvider={"reference": "Organization/cc"})
    results = score(encounter, inputs(), UTC, settings=config.risk)
    assert results["hospital"].components["O"] == 2
    assert score(encounter, inputs(), UTC)["hospital"].components["O"] == 0
    assert RiskConfig().oncology.services is None


# -- what the score did not recognise ----------------------------------------------------------


def test_observation_notes_carry_weights_and_unrecognised_codes() -> None:
    """The score Observation lists the unrecognised codes and the weight table used."""
    local = {
        "resourceType": "Condition",
        "id": "c9",
        "subject": {"reference": "Patient/p1"},
        "code": {
            "coding": [{"system": LOCAL, "code": "HF-07", "display": "Heart failure (local)"}]
        },
    }
    result = lace(stay(), conditions=[local])
    obs = score_observation(
        result, patient="Patient/p1", encounter="Encounter/idx", effective=START, identifier="o"
    )
    notes = [n["text"] for n in obs["note"]]
    assert any("chf 2" in n and "lace table" in n for n in notes)
    assert any(f'{LOCAL}|HF-07 "Heart failure (local)" (Condition/c9)' in n for n in notes)
    assert any("mappings/charlson-snomed.yaml" in n for n in notes)
    from fhir.resources.R4B.observation import Observation

    Observation.model_validate(obs)


def test_plan_details_list_the_unrecognised_codes() -> None:
    """`plan --json` rows of record-risk carry the items, the missing inputs and the codes no
    table recognised."""
    local = {
        "resourceType": "Condition",
        "id": "c9",
        "code": {"coding": [{"system": LOCAL, "code": "X1"}]},
    }
    results = score(stay(), inputs([local]), UTC)
    transition = Transition(
        kind=TransitionKind.DISCHARGE,
        patient="Patient/p1",
        focus="Encounter/idx",
        encounter="Encounter/idx",
        occurred_at=START,
    )
    rows = [a.as_dict() for a in score_actions(results, transition, START)]
    lace_row = next(r for r in rows if r["score"] == "lace")
    assert lace_row["details"]["unrecognised"] == [
        {"condition": "Condition/c9", "system": LOCAL, "code": "X1", "display": None}
    ]
    assert lace_row["details"] == score_details(results["lace"])
