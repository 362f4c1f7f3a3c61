"""What both scores read from Encounters: the stay, its acuity and the patient's history."""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from fhirbridge._fhirjson import (
    Resource,
    codes,
    has_code,
    instant,
    local_date,
    period,
    ref_key,
    resource_key,
    same_subject,
    subject_key,
)
from fhirbridge.risk.codes import RiskInputs

#: Acuity signal names, as reported in ``ScoreResult.acuity_signals``.
SIGNAL_ADMIT_SOURCE = "admit-source"
SIGNAL_CLASS_HISTORY = "class-history"
SIGNAL_LINKED_ED = "linked-ed-visit"
SIGNAL_PRIORITY = "priority"


@dataclass(frozen=True, slots=True)
class Stay:
    """The index encounter as the scores see it.

    ``start`` is when the inpatient stay began: the start of the first inpatient entry of
    ``classHistory`` (an ED visit that turned into an admission in one Encounter), else
    ``period.start``. ``window_start`` is ``period.start`` (ED time included), the earliest
    moment a result or procedure may belong to the stay.
    """

    key: str | None
    patient: str | None
    start: datetime | None
    end: datetime | None
    start_date: date | None
    end_date: date | None
    window_start: datetime | None
    part_of: str | None

    @property
    def length_of_stay(self) -> int | None:
        """Days between the admission and discharge dates, or None when not computable."""
        if self.start_date is None or self.end_date is None:
            return None
        days = (self.end_date - self.start_date).days
        return days if days >= 0 else None

    def within(self, moment: datetime | None) -> bool:
        """True when ``moment`` falls between ``period.start`` and the discharge (if any)."""
        if moment is None or self.window_start is None or moment < self.window_start:
            return False
        return self.end is None or moment <= self.end


def check_encounter(encounter: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``encounter`` is an Encounter dict."""
    if not isinstance(encounter, Mapping) or encounter.get("resourceType") != "Encounter":
        raise ValueError("the index encounter must be a FHIR Encounter dict")


def _class_codes(value: Any) -> set[str]:
    return set(codes(value))


def _history(encounter: Resource) -> list[tuple[datetime | None, str | None, set[str]]]:
    """classHistory entries as (start instant, raw start, class codes), earliest first."""
    entries = []
    for entry in encounter.get("classHistory") or ():
        if not isinstance(entry, Mapping):
            continue
        raw, _ = period(entry)
        entries.append((instant(raw), raw, _class_codes(entry.get("class"))))
    known = [e for e in entries if e[0] is not None]
    unknown = [e for e in entries if e[0] is None]
    known.sort(key=lambda e: e[0] or datetime.min)
    return known + unknown


def stay_of(encounter: Resource, inputs: RiskInputs, tz: tzinfo) -> Stay:
    """The :class:`Stay` of an index Encounter."""
    raw_start, raw_end = period(encounter)
    start_raw = raw_start
    for _moment, raw, classes in _history(encounter):
        if raw and classes & inputs.inpatient_classes:
            start_raw = raw
            break
    return Stay(
        key=resource_key(encounter),
        patient=subject_key(encounter),
        start=instant(start_raw),
        end=instant(raw_end),
        start_date=local_date(start_raw, tz),
        end_date=local_date(raw_end, tz),
        window_start=instant(raw_start) or instant(start_raw),
        part_of=ref_key(encounter.get("partOf")),
    )


def is_void(encounter: Resource, inputs: RiskInputs) -> bool:
    """True when the Encounter did not happen (cancelled, entered-in-error, planned)."""
    return encounter.get("status") in inputs.void_status


def is_emergency(encounter: Resource, inputs: RiskInputs, *, history: bool = False) -> bool:
    """True when the class is an emergency one (or, with ``history``, ever was)."""
    if _class_codes(encounter.get("class")) & inputs.emergency_classes:
        return True
    return history and any(
        classes & inputs.emergency_classes for _, _, classes in _history(encounter)
    )


def is_inpatient(encounter: Resource, inputs: RiskInputs) -> bool:
    """True when the class is, or ever was, an inpatient one (IMP, ACUTE, NONAC)."""
    if _class_codes(encounter.get("class")) & inputs.inpatient_classes:
        return True
    return any(classes & inputs.inpatient_classes for _, _, classes in _history(encounter))


def other_encounters(
    stay: Stay, encounters: Sequence[Resource], inputs: RiskInputs
) -> Iterator[Resource]:
    """The patient's encounters that happened and are not the index one."""
    for other in encounters:
        if not isinstance(other, Mapping) or other.get("resourceType", "Encounter") != "Encounter":
            continue
        key = resource_key(other)
        if key is not None and key == stay.key:
            continue
        if is_void(other, inputs) or not same_subject(other, stay.patient):
            continue
        yield other


def linked_ed_visits(
    stay: Stay, encounters: Sequence[Resource], inputs: RiskInputs
) -> tuple[Resource, ...]:
    """The emergency Encounters that led to this admission.

    Linked by ``partOf`` (either way), or begun before the admission and ended (or begun, when
    open) no more than the window (12 hours) before the admission started.
    """
    linked = []
    for other in other_encounters(stay, encounters, inputs):
        if not is_emergency(other, inputs):
            continue
        key = resource_key(other)
        by_part_of = (key is not None and key == stay.part_of) or (
            stay.key is not None and ref_key(other.get("partOf")) == stay.key
        )
        raw_start, raw_end = period(other)
        began, ended = instant(raw_start), instant(raw_end) or instant(raw_start)
        by_time = (
            stay.start is not None
            and began is not None
            and ended is not None
            and began <= stay.start
            and ended >= stay.start - inputs.ed_link_window
        )
        if by_part_of or by_time:
            linked.append(other)
    return tuple(linked)


@dataclass(frozen=True, slots=True)
class Acuity:
    """Whether the admission was acute, the signals that said so, and whether anything said."""

    signals: tuple[str, ...]
    known: bool
    linked: tuple[Resource, ...]

    @property
    def acute(self) -> bool:
        """True when any signal says the admission was acute (urgent or emergent)."""
        return bool(self.signals)


def acuity_of(
    encounter: Resource, stay: Stay, encounters: Sequence[Resource], inputs: RiskInputs
) -> Acuity:
    """The acuity of the index admission, "whichever way the EHR says it".

    Signals: ``hospitalization.admitSource`` is emergency (``emd``); ``classHistory`` begins
    with an emergency class; an emergency Encounter is linked (see :func:`linked_ed_visits`);
    ``priority`` is emergency, stat or urgent. The acuity is known when any of these elements
    is present, whatever it says.
    """
    signals: list[str] = []
    hospitalization = encounter.get("hospitalization")
    admit_source = (
        hospitalization.get("admitSource") if isinstance(hospitalization, Mapping) else None
    )
    if has_code(admit_source, inputs.admit_sources):
        signals.append(SIGNAL_ADMIT_SOURCE)
    history = _history(encounter)
    if history and history[0][2] & inputs.emergency_classes:
        signals.append(SIGNAL_CLASS_HISTORY)
    linked = linked_ed_visits(stay, encounters, inputs)
    if linked:
        signals.append(SIGNAL_LINKED_ED)
    priority = encounter.get("priority")
    if has_code(priority, inputs.priorities):
        signals.append(SIGNAL_PRIORITY)
    known = bool(signals) or any(
        next(codes(value), None) is not None for value in (admit_source, priority)
    )
    return Acuity(signals=tuple(signals), known=known or bool(history), linked=linked)


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier (clamped to the month's last day)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def started_in_window(other: Resource, stay: Stay, months: int, tz: tzinfo) -> bool:
    """True when ``other`` began before the admission, on or after the date ``months`` earlier."""
    raw_start, _ = period(other)
    began, began_date = instant(raw_start), local_date(raw_start, tz)
    if stay.start is None or stay.start_date is None or began is None or began_date is None:
        return False
    return began < stay.start and began_date >= months_before(stay.start_date, months)
