"""Whether an index stay gets risk scores at all: not when the patient died in hospital.

LACE predicts "death or unplanned readmission within 30 days of discharge" and HOSPITAL a
potentially avoidable readmission; both assume a patient discharged alive. A stay whose
discharge disposition is a death (``exp``; NUBC 20, 40-42; any code that
``mappings/dispositions.yaml`` groups as ``death``), or whose Patient was deceased by the
discharge date, gets no score, no Observation and no RiskAssessment.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, tzinfo
from typing import Any

from fhirbridge._fhirjson import codings, local_date, period
from fhirbridge.rules.dispositions import disposition_group

__all__ = ["DIED_IN_HOSPITAL", "not_scored_reason"]

#: The reason :func:`not_scored_reason` gives for a death.
DIED_IN_HOSPITAL = "died-in-hospital"


def _expired(encounter: Mapping[str, Any]) -> bool:
    hospitalization = encounter.get("hospitalization")
    if not isinstance(hospitalization, Mapping):
        return False
    for coding in codings(hospitalization.get("dischargeDisposition")):
        system = coding.get("system")
        code = coding.get("code")
        group = disposition_group(
            system if isinstance(system, str) else None, None if code is None else str(code)
        )
        if group == "death":
            return True
    return False


def _deceased_by_discharge(
    encounter: Mapping[str, Any], patient: Mapping[str, Any] | None, tz: tzinfo
) -> bool:
    """Deceased (boolean true), or died on or before the discharge date in ``tz``."""
    if not isinstance(patient, Mapping):
        return False
    if patient.get("deceasedBoolean") is True:
        return True
    died = local_date(patient.get("deceasedDateTime"), tz)
    if died is None:
        return False
    _, raw_end = period(encounter)
    discharged = local_date(raw_end, tz)
    return discharged is None or died <= discharged


def not_scored_reason(
    encounter: Mapping[str, Any],
    patient: Mapping[str, Any] | None = None,
    *,
    tz: tzinfo = UTC,
) -> str | None:
    """``"died-in-hospital"`` when the stay must not be scored, else None.

    ``patient`` is the Patient resource when the caller has it: ``deceasedBoolean`` true, or a
    ``deceasedDateTime`` on or before the discharge date (dates in ``tz``), counts as a death
    in hospital. A patient who died after going home is scored (the stay ended alive).
    """
    if _expired(encounter) or _deceased_by_discharge(encounter, patient, tz):
        return DIED_IN_HOSPITAL
    return None
