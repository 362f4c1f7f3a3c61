"""Engagement: Appointments the patient did not come to (pure).

``detect_appointment`` gives ``appointment-noshow`` when an Appointment becomes ``noshow``
(R4 appointmentstatus: "Some or all of the participant(s) have not/did not appear for the
appointment"). ``engagement_window`` groups a patient's no-shows into windows: the first
no-show opens a window of ``window_days`` days, every no-show inside it belongs to it, the
first one after it opens the next. A window with ``noshows`` or more no-shows is ``lapsed``:
it escalates once, and its id (the Appointment that opened it) keeps a third no-show in the
same window from escalating again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.values import Transition, TransitionKind, parse_instant

__all__ = [
    "Engagement",
    "appointment_patient",
    "appointment_time",
    "detect_appointment",
    "engagement_window",
]


def appointment_patient(appointment: Mapping[str, Any]) -> str | None:
    """The patient among the Appointment's participants."""
    for participant in appointment.get("participant") or ():
        ref = local_reference((participant or {}).get("actor"))
        if ref and ref.startswith("Patient/"):
            return ref
    return None


def appointment_time(appointment: Mapping[str, Any]) -> datetime | None:
    """When the Appointment was for (``start``), else when it was last changed."""
    return parse_instant(appointment.get("start")) or parse_instant(
        (appointment.get("meta") or {}).get("lastUpdated")
    )


def detect_appointment(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], *, server: str = ""
) -> list[Transition]:
    """``appointment-noshow`` when an Appointment becomes ``noshow``."""
    if after.get("status") != "noshow":
        return []
    if before is not None and before.get("status") == "noshow":
        return []
    patient = appointment_patient(after)
    if patient is None:
        return []
    meta = after.get("meta") or {}
    service = [
        c.get("code")
        for concept in after.get("serviceType") or ()
        for c in (concept or {}).get("coding") or ()
        if c.get("code")
    ]
    return [
        Transition(
            kind=TransitionKind.APPOINTMENT_NOSHOW,
            patient=patient,
            focus=f"Appointment/{after.get('id')}",
            occurred_at=appointment_time(after) or datetime.now(UTC),
            focus_version=str(meta.get("versionId") or ""),
            server=server,
            facts={"start": after.get("start"), "service_type": service},
        )
    ]


@dataclass(frozen=True, slots=True)
class Engagement:
    """The no-show window an Appointment falls in: its id, and how many no-shows it holds
    up to and including that Appointment."""

    window: str
    noshows: int
    lapsed: bool

    def facts(self) -> dict[str, Any]:
        """What a plan shows and rules may test (``case: {engagement: [lapsed]}``)."""
        return {
            "engagement": "lapsed" if self.lapsed else "engaged",
            "engagement_window": self.window,
            "noshows_in_window": self.noshows,
        }


def engagement_window(
    appointments: Iterable[Mapping[str, Any]],
    appointment: Mapping[str, Any],
    *,
    window_days: int,
    noshows: int,
) -> Engagement:
    """The window of ``appointment`` among the patient's no-show ``appointments`` (it is
    counted even when the list lacks it)."""
    this = f"Appointment/{appointment.get('id')}"
    dated: dict[str, datetime] = {}
    for item in [*appointments, appointment]:
        if item.get("status") != "noshow":
            continue
        when = appointment_time(item)
        if when is not None:
            dated[f"Appointment/{item.get('id')}"] = when
    if this not in dated:
        return Engagement(window=this, noshows=0, lapsed=False)
    ordered = sorted(dated.items(), key=lambda kv: (kv[1], kv[0]))
    span = timedelta(days=window_days)
    start_ref, start_at, count = ordered[0][0], ordered[0][1], 0
    for ref, when in ordered:
        if when.date() - start_at.date() > span:
            start_ref, start_at, count = ref, when, 0
        count += 1
        if ref == this:
            break
    return Engagement(window=start_ref, noshows=count, lapsed=count >= noshows)
