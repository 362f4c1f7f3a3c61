"""Transitions of care read from two versions of an Encounter.

``detect_encounter(before, after, context)`` is pure: the previous snapshot (or None), the
new version, and what it needs to know about the patient's other stays. R4 has no
"discharged" status, so a discharge is ``finished`` or a ``period.end`` on an inpatient,
observation or short-stay encounter; a stay first seen already finished still counts,
dated by ``period.end`` (never by ``meta.lastUpdated``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from fhirbridge.detect.projection import ED_ACTIVE, EncounterView
from fhirbridge.values import Stay, Transition, TransitionKind

__all__ = ["EncounterContext", "detect_encounter", "detect_encounter_views"]

DispositionGrouper = Callable[[str | None, str | None], str]


def _no_groups(system: str | None, code: str | None) -> str:
    return "unknown"


@dataclass(frozen=True, slots=True)
class EncounterContext:
    """What encounter detection needs besides the two versions.

    ``stays`` are the patient's other encounters known to the journal or the server;
    ``tz`` is the facility's time zone (readmission windows count calendar dates there).
    """

    server: str = ""
    stays: Sequence[Stay] = ()
    tz: tzinfo = UTC
    readmission_window_days: int = 30
    disposition_group: DispositionGrouper = field(default=_no_groups)
    now: datetime | None = None


def _when(*candidates: datetime | None) -> datetime:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return datetime.now(UTC)


_ADMITTED = ("in-progress", "onleave")


def _ended_now(old: EncounterView | None, new: EncounterView) -> bool:
    """``new`` becomes finished or gains a ``period.end`` (or is first seen ended).

    Comparing ``ended`` alone misses a stay whose in-progress versions already carried a
    period.end (the Da Vinci examples do) and that becomes finished later.
    """
    if not new.ended:
        return False
    if old is None or not old.ended:
        return True
    became_finished = new.status == "finished" and old.status != "finished"
    gained_end = new.end is not None and old.end is None
    return became_finished or gained_end


def _disposition_facts(view: EncounterView, context: EncounterContext) -> dict[str, Any]:
    return {
        "disposition_code": view.disposition_code,
        "disposition_system": view.disposition_system,
        "disposition_group": context.disposition_group(
            view.disposition_system, view.disposition_code
        ),
    }


def _base_facts(view: EncounterView) -> dict[str, Any]:
    return {
        "encounter_class": view.class_code,
        "status": view.status,
        "service_provider": view.service_provider,
        "admit_source": view.admit_source,
        "start": view.start.isoformat() if view.start else None,
        "end": view.end.isoformat() if view.end else None,
    }


def detect_encounter(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    context: EncounterContext | None = None,
) -> list[Transition]:
    """The transitions between ``before`` (previous snapshot, or None) and ``after``.

    The caller has already dropped duplicates and versions older than the snapshot.
    """
    old = EncounterView.of(before) if before is not None else None
    return detect_encounter_views(old, EncounterView.of(after), context)


def detect_encounter_views(
    old: EncounterView | None, new: EncounterView, context: EncounterContext | None = None
) -> list[Transition]:
    """:func:`detect_encounter` on projections already made (the engine caches them)."""
    ctx = context or EncounterContext()
    if new.patient is None or not new.id:
        return []
    found: list[Transition] = []
    facts = _base_facts(new)

    def when(*candidates: datetime | None) -> datetime:
        # the context's clock, not the wall clock, when the resource has no date at all
        return _when(*candidates, ctx.now)

    def emit(
        kind: TransitionKind,
        occurred_at: datetime,
        extra: Mapping[str, Any] | None = None,
        discriminator: str = "",
    ) -> None:
        found.append(
            Transition(
                kind=kind,
                patient=new.patient or "",
                focus=new.reference,
                occurred_at=occurred_at,
                encounter=new.reference,
                focus_version=new.version_id,
                discriminator=discriminator,
                server=ctx.server,
                facts={**facts, **(extra or {})},
            )
        )

    def discharged(kind: TransitionKind) -> None:
        # a discharge (inpatient or ED), and what its disposition adds: a death, or a
        # transfer to another facility
        at = when(new.end, new.last_updated)
        disposition = _disposition_facts(new, ctx)
        emit(kind, at, disposition)
        if disposition["disposition_group"] == "death":
            emit(TransitionKind.DEATH, at, disposition)
        elif disposition["disposition_group"] == "transfer":
            emit(
                TransitionKind.TRANSFER,
                at,
                {**disposition, "transfer": "other-facility"},
                discriminator="other-facility",
            )

    # cancelled or entered in error, after we knew it as a real encounter
    if new.voided:
        if old is not None and not old.voided:
            emit(
                TransitionKind.ENCOUNTER_CANCELLED,
                when(new.last_updated),
                {"previous_status": old.status},
            )
        return found

    # ED arrival, and an ED visit that ends without becoming an admission
    if new.emergency:
        if new.status in ED_ACTIVE and (
            old is None or not old.emergency or old.status not in ED_ACTIVE
        ):
            emit(TransitionKind.ED_VISIT, when(new.start, new.last_updated))
        if _ended_now(old, new):
            discharged(TransitionKind.ED_DISCHARGE)

    if new.inpatient:
        admitted_now = new.status in _ADMITTED and (
            old is None or not old.inpatient or old.status not in _ADMITTED
        )
        # a stay never seen admitted (first seen finished, or planned then finished between
        # two polls) is dated by its period.start for the readmission look-back
        was_admitted = old is not None and old.inpatient and (old.status in _ADMITTED or old.ended)
        first_seen_finished = new.ended and not was_admitted
        if admitted_now:
            emit(TransitionKind.ADMISSION, when(new.start, new.last_updated))
        if admitted_now or first_seen_finished:
            found.extend(_readmission(new, ctx, facts))
        if _ended_now(old, new):
            discharged(TransitionKind.DISCHARGE)

    # class change within one encounter (ED to inpatient is often the same Encounter); first
    # seen, the classHistory tells of it
    from_class = old.class_code if old is not None else _previous_class(new)
    if from_class and new.class_code and from_class != new.class_code:
        emit(
            TransitionKind.TRANSFER,
            when(new.class_since, new.last_updated),
            {"transfer": "class", "from_class": from_class, "to_class": new.class_code},
            discriminator=f"class:{from_class}>{new.class_code}",
        )

    if old is not None:
        # a move to another unit or bed
        was, now = old.current_location, new.current_location
        if was and now and was != now and not new.ended:
            moved_at = next((s.start for s in new.locations if s.location == now and s.start), None)
            emit(
                TransitionKind.TRANSFER,
                when(moved_at, new.last_updated),
                {"transfer": "location", "from_location": was, "to_location": now},
                discriminator=f"location:{was}>{now}@{new.version_id}",
            )
    return found


def _previous_class(view: EncounterView) -> str | None:
    """The class before the current one, from a first-seen encounter's classHistory."""
    history = view.class_history
    if len(history) >= 2 and history[-1] == view.class_code:
        return history[-2]
    return None


def _readmission(
    new: EncounterView, ctx: EncounterContext, facts: Mapping[str, Any]
) -> list[Transition]:
    """A readmission when an earlier inpatient discharge lies within the window (by date)."""
    if new.start is None or new.patient is None:
        return []
    start_day = new.start.astimezone(ctx.tz).date()
    best: tuple[int, Stay] | None = None
    for stay in ctx.stays:
        if stay.encounter == new.reference or stay.end is None or stay.patient != new.patient:
            continue
        if stay.encounter_class not in ("IMP", "ACUTE", "NONAC", "OBSENC", "SS"):
            continue
        if stay.status in ("cancelled", "entered-in-error"):
            continue
        gap = (start_day - stay.end.astimezone(ctx.tz).date()).days
        if stay.end > new.start or gap < 0 or gap > ctx.readmission_window_days:
            continue
        if best is None or gap < best[0]:
            best = (gap, stay)
    if best is None:
        return []
    gap, stay = best
    return [
        Transition(
            kind=TransitionKind.READMISSION,
            patient=new.patient,
            focus=new.reference,
            occurred_at=new.start,
            encounter=new.reference,
            focus_version=new.version_id,
            server=ctx.server,
            facts={
                **facts,
                "previous_encounter": stay.encounter,
                "previous_discharge": stay.end.isoformat() if stay.end else None,
                "days_since_discharge": gap,
            },
        )
    ]
