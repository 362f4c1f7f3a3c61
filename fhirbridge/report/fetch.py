"""Read what the measures need from the FHIR server (the system of record).

Requests: the engine's Tasks (one search, paged), the Encounters they name and the other
stays of their patients (searches of up to :data:`BATCH` ids or patients each), the engine's
RiskAssessments (for risk tiers) and the Appointments of the period. Appointments are
optional: a server that refuses the search gives a report without the no-show measure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import structlog

from fhirbridge.detect.projection import local_reference
from fhirbridge.errors import FhirError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.report.measures import compute
from fhirbridge.report.model import CoordinationReport, Period, ReportData, Scope
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, parse_instant

__all__ = ["BATCH", "DEFAULT_DAYS", "default_period", "read_report", "read_report_data"]

log = structlog.get_logger(__name__)
#: References per search request (kept well under common URL length limits).
BATCH = 40
#: The period a report covers when none is given: the last 90 days.
DEFAULT_DAYS = 90
ENGINE_TAG = f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"
#: RiskAssessment.prediction.qualitativeRisk codes (risk-probability) to report tiers.
TIER_OF_CODE = {"high": "high", "moderate": "moderate", "low": "low", "negligible": "low"}


def _chunks(values: Sequence[str], size: int = BATCH) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _tier(assessment: Mapping[str, Any]) -> str | None:
    for prediction in assessment.get("prediction") or ():
        for coding in (prediction.get("qualitativeRisk") or {}).get("coding") or ():
            tier = TIER_OF_CODE.get(str(coding.get("code")))
            if tier:
                return tier
    return None


def risk_tiers(assessments: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Tier by ``Encounter/id`` and by ``Patient/id`` (the latest assessment wins; for an
    encounter with several scores, the highest tier)."""
    rank = {"low": 0, "moderate": 1, "high": 2}
    tiers: dict[str, str] = {}
    latest: dict[str, str] = {}

    def when(a: Mapping[str, Any]) -> str:
        return str(a.get("occurrenceDateTime") or (a.get("meta") or {}).get("lastUpdated") or "")

    for assessment in sorted(assessments, key=when):
        tier = _tier(assessment)
        if tier is None:
            continue
        encounter = local_reference(assessment.get("encounter"))
        if encounter and rank[tier] >= rank.get(tiers.get(encounter, "low"), 0):
            tiers[encounter] = tier
        patient = local_reference(assessment.get("subject"))
        if patient:
            latest[patient] = tier
    return {**latest, **tiers}


async def read_report_data(client: FhirClient, period: Period) -> ReportData:
    """Everything :func:`fhirbridge.report.compute` needs for ``period``, from the server."""
    tasks = await client.search_all("Task", {"_tag": ENGINE_TAG, "_count": 500})
    encounter_ids = sorted(
        {ref.split("/")[1] for t in tasks if (ref := local_reference(t.get("encounter")))}
    )
    encounters: dict[str, dict[str, Any]] = {}
    for ids in _chunks(encounter_ids):
        for encounter in await client.search_all("Encounter", {"_id": ",".join(ids)}):
            encounters[f"Encounter/{encounter['id']}"] = encounter
    patients = sorted({ref for t in tasks if (ref := local_reference(t.get("for")))})
    for refs in _chunks(patients):
        for encounter in await client.search_all(
            "Encounter", {"patient": ",".join(refs), "_count": 500}
        ):
            encounters.setdefault(f"Encounter/{encounter['id']}", encounter)
    assessments = await client.search_all("RiskAssessment", {"_tag": ENGINE_TAG, "_count": 500})
    return ReportData(
        tasks=tasks,
        encounters=encounters,
        tiers=risk_tiers(assessments),
        appointments=await _appointments(client, period),
    )


async def _appointments(client: FhirClient, period: Period) -> list[dict[str, Any]]:
    after = period.end + timedelta(days=1)
    try:
        found = await client.search_all(
            "Appointment",
            {"date": [f"ge{period.start.isoformat()}", f"lt{after.isoformat()}"], "_count": 500},
        )
    except FhirError as exc:
        log.info("report_appointments_unavailable", error=type(exc).__name__)
        return []
    return [a for a in found if _starts_within(a, period.start, after)]


def _starts_within(appointment: Mapping[str, Any], start: date, before: date) -> bool:
    instant = parse_instant(appointment.get("start"))
    return instant is not None and start <= instant.date() < before


def default_period(
    as_of: date, start: date | None = None, end: date | None = None, days: int = DEFAULT_DAYS
) -> Period:
    """``start`` to ``end`` (default: the ``days`` days up to ``as_of``)."""
    end = end or as_of
    return Period(start or end - timedelta(days=days - 1), end)


async def read_report(
    client: FhirClient,
    *,
    period: Period,
    as_of: date,
    calendar: BusinessCalendar | None = None,
    codes: Mapping[str, str] | None = None,
    scope: Scope | None = None,
) -> CoordinationReport:
    """Read the server and compute every measure (see :func:`fhirbridge.report.compute`)."""
    data = await read_report_data(client, period)
    log.info(
        "report_read",
        tasks=len(data.tasks),
        encounters=len(data.encounters),
        appointments=len(data.appointments),
    )
    return compute(data, period=period, as_of=as_of, calendar=calendar, codes=codes, scope=scope)
