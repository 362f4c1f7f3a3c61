"""Transitions of care as pure functions of (previous snapshot, new version, context).

>>> from fhirbridge.detect import detect, DetectContext
>>> transitions = detect(previous_encounter_json, new_encounter_json, DetectContext())

Nothing here performs I/O: the caller supplies the snapshot and the patient's other stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirbridge.detect.coverage import coverage_state, detect_coverage
from fhirbridge.detect.encounter import EncounterContext, detect_encounter
from fhirbridge.detect.noshow import detect_appointment, engagement_window
from fhirbridge.detect.projection import EncounterView, local_reference, version_key
from fhirbridge.detect.review import done_transition, review_transition
from fhirbridge.detect.social import SdohTable, default_sdoh_table, detect_social_need
from fhirbridge.detect.timers import overdue_transition
from fhirbridge.detect.workflow import (
    REFERRAL_CODES,
    ReferralMatcher,
    detect_patient,
    detect_service_request,
    detect_task,
)
from fhirbridge.values import Transition

__all__ = [
    "DetectContext",
    "EncounterContext",
    "EncounterView",
    "REFERRAL_CODES",
    "ReferralMatcher",
    "SdohTable",
    "coverage_state",
    "detect",
    "detect_appointment",
    "detect_coverage",
    "detect_encounter",
    "detect_patient",
    "detect_service_request",
    "detect_social_need",
    "detect_task",
    "done_transition",
    "engagement_window",
    "is_newer",
    "local_reference",
    "overdue_transition",
    "review_transition",
]


@dataclass(frozen=True, slots=True)
class DetectContext:
    """Everything detection needs besides the two versions."""

    encounter: EncounterContext = field(default_factory=EncounterContext)
    is_referral: ReferralMatcher = field(default_factory=ReferralMatcher)
    sdoh: SdohTable = field(default_factory=default_sdoh_table)

    @property
    def server(self) -> str:
        """The server the versions came from."""
        return self.encounter.server


def is_newer(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether ``after`` is a later version than ``before`` (a late, older one is not)."""
    if before is None:
        return True
    (old_time, old_version), (new_time, new_version) = version_key(before), version_key(after)
    if old_time is not None and new_time is not None and old_time != new_time:
        return new_time > old_time
    if isinstance(old_version, int) and isinstance(new_version, int):
        return new_version > old_version
    if not old_version and not new_version:
        # nothing to order by (pushed without meta): process a changed resource, never drop it
        return before != after
    return old_version != new_version


def detect(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    context: DetectContext | None = None,
) -> list[Transition]:
    """The transitions between two versions of one resource (any watched type)."""
    ctx = context or DetectContext()
    kind = after.get("resourceType")
    if kind == "Encounter":
        return detect_encounter(before, after, ctx.encounter)
    if kind == "Patient":
        return detect_patient(before, after, server=ctx.server)
    if kind == "ServiceRequest":
        return detect_service_request(before, after, server=ctx.server, is_referral=ctx.is_referral)
    if kind == "Task":
        return detect_task(before, after, server=ctx.server)
    if kind == "Coverage":
        return detect_coverage(before, after, server=ctx.server)
    if kind == "Appointment":
        return detect_appointment(before, after, server=ctx.server)
    if kind in ("Condition", "Observation"):
        return detect_social_need(before, after, server=ctx.server, table=ctx.sdoh)
    return []
