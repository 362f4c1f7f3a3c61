"""Coverage: what a patient's insurance looks like on a day, and when a Coverage becomes
active (pure).

``coverage_state(coverages, day, ending_days)`` reads the patient's Coverage resources (R4:
``status`` active | cancelled | draft | entered-in-error, ``period``, ``payor``) and answers
one of :data:`COVERAGE_STATES`:

- ``active``: an active Coverage whose period holds ``day`` and does not end within
  ``ending_days`` days of it (no end counts as not ending);
- ``ending``: active on ``day``, but every such Coverage ends within ``ending_days`` days;
- ``inactive``: Coverages exist, none active on ``day`` (cancelled, draft, expired, future);
- ``none``: no Coverage at all (entered-in-error ones do not count).

``detect_coverage`` gives ``coverage-active`` when a Coverage version is active and the one
before was not (or it is new, or its period changed): the rules then look at the patient's
whole coverage again before closing a coverage review.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.values import Transition, TransitionKind, is_engine_resource, parse_instant

__all__ = ["COVERAGE_STATES", "CoverageState", "coverage_state", "detect_coverage"]

#: The answers of :func:`coverage_state`, from best to worst.
COVERAGE_STATES: tuple[str, ...] = ("active", "ending", "inactive", "none")


@dataclass(frozen=True, slots=True)
class CoverageState:
    """The patient's coverage on a day: ``state`` and the Coverage that decided it."""

    state: str
    coverage: str | None = None
    ends: date | None = None
    payor: str | None = None

    def facts(self) -> dict[str, Any]:
        """What a plan shows and rules may test."""
        return {
            "coverage": self.state,
            "coverage_ref": self.coverage,
            "coverage_ends": self.ends.isoformat() if self.ends else None,
            "payor": self.payor,
        }


def _day(value: Any) -> date | None:
    parsed = parse_instant(value) if isinstance(value, str) else None
    return parsed.date() if parsed is not None else None


def _state_of(coverage: Mapping[str, Any], state: str) -> CoverageState:
    payors = coverage.get("payor") or []
    payor = local_reference(payors[0]) if payors else None
    if payor is None and payors and isinstance(payors[0], Mapping):
        payor = payors[0].get("display")
    return CoverageState(
        state=state,
        coverage=f"Coverage/{coverage.get('id')}",
        ends=_day((coverage.get("period") or {}).get("end")),
        payor=payor,
    )


def coverage_state(
    coverages: Iterable[Mapping[str, Any]], day: date, ending_days: int
) -> CoverageState:
    """The patient's coverage on ``day`` (see the module docstring)."""
    horizon = day + timedelta(days=ending_days)
    counted: list[Mapping[str, Any]] = []
    active: list[Mapping[str, Any]] = []
    for coverage in coverages:
        if coverage.get("resourceType") != "Coverage":
            continue
        status = coverage.get("status")
        if status == "entered-in-error":
            continue
        counted.append(coverage)
        period = coverage.get("period") or {}
        start, end = _day(period.get("start")), _day(period.get("end"))
        if status == "active" and (start is None or start <= day) and (end is None or end >= day):
            active.append(coverage)
    lasting = [
        c for c in active if (_day((c.get("period") or {}).get("end")) or date.max) > horizon
    ]
    if lasting:
        return _state_of(lasting[0], "active")
    if active:
        latest = max(active, key=lambda c: _day((c.get("period") or {}).get("end")) or date.max)
        return _state_of(latest, "ending")
    if counted:
        return _state_of(counted[-1], "inactive")
    return CoverageState(state="none")


def detect_coverage(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], *, server: str = ""
) -> list[Transition]:
    """``coverage-active`` when a Coverage becomes active (or an active one changes period)."""
    if after.get("status") != "active" or is_engine_resource(after):
        return []
    unchanged = before is not None and (before.get("period") or {}) == (after.get("period") or {})
    if unchanged and before is not None and before.get("status") == "active":
        return []
    patient = local_reference(after.get("beneficiary"))
    if patient is None:
        return []
    meta = after.get("meta") or {}
    version = str(meta.get("versionId") or "")
    state = _state_of(after, "active")
    return [
        Transition(
            kind=TransitionKind.COVERAGE_ACTIVE,
            patient=patient,
            focus=f"Coverage/{after.get('id')}",
            occurred_at=parse_instant(meta.get("lastUpdated")) or datetime.now(UTC),
            focus_version=version,
            discriminator=version,
            server=server,
            facts={
                "status": "active",
                "period_end": state.ends.isoformat() if state.ends else None,
                "payor": state.payor,
            },
        )
    ]
