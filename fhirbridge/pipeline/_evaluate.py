"""The evaluate stage: journalled versions -> transitions and plans, writing nothing.

A batch is split into patient lanes (:mod:`._lanes`). Each lane keeps what its versions
decided so far (the newest snapshot and Encounter projection of each resource, the stays of
its patients), so a version reads the journal as if the versions before it in its lane were
recorded: exactly what recording them one by one would give, without a transaction each.
Detection runs first for the whole batch, then what planning needs is prefetched for every
transition at once, then the plans.

A version whose evaluation raises is not an error of the pass: its outcome carries the
exception, and the commit stage dead-letters it. Failures a retry may fix
(:class:`~fhirbridge.errors.FhirError`, :class:`~fhirbridge.errors.StoreError`) propagate
and leave the batch pending.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from fhirbridge.clock import Clock
from fhirbridge.detect import DetectContext, EncounterContext, detect, is_newer
from fhirbridge.detect.encounter import detect_encounter_views
from fhirbridge.detect.projection import EncounterView
from fhirbridge.errors import FhirError, StoreError
from fhirbridge.pipeline._lanes import lane_marks, lanes, run_lanes
from fhirbridge.pipeline._lookups import Lookups, stay_of
from fhirbridge.pipeline._plan import Planner
from fhirbridge.store.base import OutboxItem, Store
from fhirbridge.values import Plan, ResourceVersion, Stay, Transition, TransitionKind
from fhirbridge.writeback.outbox import outbox_item

__all__ = ["Evaluator", "Outcome"]

VIEW_CACHE_SIZE = 20_000


@dataclass(slots=True)
class Outcome:
    """What evaluating one version decided, before it is recorded."""

    version: ResourceVersion
    transitions: list[Transition] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    items: list[OutboxItem] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    view: EncounterView | None = None
    newer: bool = True
    error: Exception | None = None

    @property
    def reason(self) -> str:
        """Why the version is dead-lettered ("" when it is not)."""
        if self.error is None:
            return ""
        text = f"cannot process {self.version.reference}: {type(self.error).__name__}: {self.error}"
        # what the journal cannot store (a lone surrogate) must not fail the dead letter too
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(slots=True)
class _Reads:
    """What a batch read from the journal before evaluating it: the snapshots of its
    resources (None: there is none) and the stays of its inpatients, one query per kind
    instead of one per version. Nothing is written while a batch is evaluated, so these are
    what reading one by one would give."""

    snapshots: dict[tuple[str, str, str], ResourceVersion | None] = field(default_factory=dict)
    stays: dict[tuple[str, str], list[Stay]] = field(default_factory=dict)


@dataclass(slots=True)
class _Lane:
    """What one lane's versions decided so far (not yet in the journal)."""

    views: dict[str, EncounterView] = field(default_factory=dict)
    snapshots: dict[str, ResourceVersion] = field(default_factory=dict)
    stays: dict[str, dict[str, Stay]] = field(default_factory=dict)
    reads: _Reads | None = None


def _transient(exc: Exception) -> bool:
    """Failures of the server or the journal: the version stays pending for a retry."""
    return isinstance(exc, FhirError | StoreError | MemoryError)


class Evaluator:
    """Detects and plans for versions, in patient lanes, writing nothing."""

    def __init__(
        self,
        store: Store,
        lookups: Lookups,
        planner: Planner,
        *,
        tz: tzinfo,
        readmission_window_days: int,
        disposition_group: Callable[[str | None, str | None], str],
        clock: Clock,
        concurrency: int = 8,
        cache_views: bool = True,
    ) -> None:
        self.store = store
        self.lookups = lookups
        self.planner = planner
        self.tz = tz
        self.readmission_window_days = readmission_window_days
        self.disposition_group = disposition_group
        self.clock = clock
        self.concurrency = concurrency
        # projections of the newest Encounter snapshots: a single writer may trust them; with
        # several workers sharing the journal, another worker may have moved a snapshot on
        self.cache_views = cache_views
        self._views: OrderedDict[tuple[str, str], EncounterView] = OrderedDict()

    # -- the batch -----------------------------------------------------------------------
    async def evaluate(
        self, versions: Sequence[ResourceVersion], groups: Sequence[Sequence[int]] | None = None
    ) -> list[Outcome]:
        """Outcomes of ``versions``, in their order (lanes by :func:`._lanes.lanes`)."""
        groups = groups if groups is not None else lanes(versions)
        views: dict[int, EncounterView] = {}
        broken: dict[int, Exception] = {}
        for index, version in enumerate(versions):
            if version.resource_type == "Encounter":
                try:
                    views[index] = EncounterView.from_raw(version.raw)
                except Exception as exc:  # the version's own fault: dead-lettered below
                    if _transient(exc):
                        raise
                    broken[index] = exc
        named = [p for v in versions for p in lane_marks(v)[1:]]  # the patients they name
        self.lookups.read_ahead(named)  # before the prefetch, which reads these Patients too
        try:
            await self._prefetch(versions, views, named)
            reads = self._read_ahead(versions, views)
            return await self._evaluated(versions, groups, views, broken, reads)
        finally:
            self.lookups.forget_read_ahead()

    async def _evaluated(
        self,
        versions: Sequence[ResourceVersion],
        groups: Sequence[Sequence[int]],
        views: Mapping[int, EncounterView],
        broken: Mapping[int, Exception],
        reads: _Reads,
    ) -> list[Outcome]:
        state: dict[int, _Lane] = {}
        for group in groups:
            lane = _Lane(reads=reads)
            state.update(dict.fromkeys(group, lane))

        async def detect_one(index: int) -> Outcome:
            version = versions[index]
            if index in broken:
                return Outcome(version, error=broken[index])
            return await self._guarded(
                version, lambda: self._detect(version, state[index], views.get(index))
            )

        outcomes = await run_lanes(groups, detect_one, concurrency=self.concurrency)
        await self.planner.prefetch(
            [
                (t, o.version.resource)
                for o in outcomes.values()
                if o.error is None
                for t in o.transitions
            ]
        )

        async def plan_one(index: int) -> Outcome:
            outcome = outcomes[index]
            if outcome.error is not None or not outcome.transitions:
                return outcome
            return await self._guarded(outcome.version, lambda: self._plan(outcome))

        planned = await run_lanes(groups, plan_one, concurrency=self.concurrency)
        return [planned[i] for i in range(len(versions))]

    async def _prefetch(
        self,
        versions: Sequence[ResourceVersion],
        views: Mapping[int, EncounterView],
        named: Sequence[str],
    ) -> None:
        """One lookup for the batch: every patient it names (Patient, care team), the
        earlier stays of the inpatients, and what a discharge of each finished inpatient
        stay would need (risk inputs); planning then finds them cached."""
        patients = [*named]
        patients += [v.reference for v in versions if v.resource_type == "Patient"]
        inpatients = [view for view in views.values() if view.patient and view.inpatient]
        discharges = [
            (
                Transition(
                    kind=TransitionKind.DISCHARGE,
                    patient=view.patient or "",
                    focus=view.reference,
                    occurred_at=view.end,
                ),
                versions[index].resource,
            )
            for index, view in views.items()
            if view.patient and view.inpatient and view.status == "finished" and view.end
        ]
        await self.planner.prefetch(
            [],
            patients=patients,
            stays=[view.patient or "" for view in inpatients],
            discharges=discharges,
        )

    def _read_ahead(
        self, versions: Sequence[ResourceVersion], views: Mapping[int, EncounterView]
    ) -> _Reads:
        """The snapshots and stays the batch's detection will read, in bulk."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for version in versions:
            cached = self.cache_views and (version.server, version.id) in self._views
            if version.resource_type == "Encounter" and cached:
                continue  # projected already: its snapshot is not read
            wanted.setdefault((version.server, version.resource_type), set()).add(version.id)
        reads = _Reads()
        for (server, kind), ids in wanted.items():
            found = self.store.snapshots(server, kind, ids)
            reads.snapshots.update(((server, kind, rid), found.get(rid)) for rid in ids)
        patients: dict[str, set[str]] = {}
        for index, view in views.items():
            if view.patient and view.inpatient:
                patients.setdefault(versions[index].server, set()).add(view.patient)
        for server, asked in patients.items():
            stays = self.store.patient_stays(server, asked)
            reads.stays.update(((server, patient), found) for patient, found in stays.items())
        return reads

    def _snapshot(self, lane: _Lane, version: ResourceVersion) -> ResourceVersion | None:
        """The journal's snapshot of ``version``'s resource (read ahead when it was)."""
        key = (version.server, version.resource_type, version.id)
        if lane.reads is not None and key in lane.reads.snapshots:
            return lane.reads.snapshots[key]
        return self.store.snapshot(*key)

    def _stays(self, lane: _Lane, server: str, patient: str) -> list[Stay]:
        """The journal's stays of ``patient`` (read ahead when they were)."""
        if lane.reads is not None and (server, patient) in lane.reads.stays:
            return lane.reads.stays[(server, patient)]
        return self.store.stays(server, patient)

    async def evaluate_one(self, version: ResourceVersion) -> Outcome:
        """The outcome of one version against the journal as it is (the careful path)."""

        async def both() -> Outcome:
            outcome = await self._detect(version, _Lane(), None)
            return await self._plan(outcome) if outcome.transitions else outcome

        return await self._guarded(version, both)

    async def _guarded(
        self, version: ResourceVersion, step: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        try:
            return await step()
        except Exception as exc:
            if _transient(exc):
                raise
            return Outcome(version, error=exc)

    # -- steps ---------------------------------------------------------------------------
    async def _detect(
        self, version: ResourceVersion, lane: _Lane, view: EncounterView | None
    ) -> Outcome:
        if version.resource_type == "Encounter":
            return await self._detect_encounter(version, lane, view)
        before = lane.snapshots.get(version.reference) or self._snapshot(lane, version)
        if before is not None and not is_newer(before.resource, version.resource):
            return Outcome(version, newer=False)  # a late, older version: journalled, ignored
        context = DetectContext(encounter=self.context(version.server, ()))
        previous = before.resource if before is not None else None
        transitions = detect(previous, version.resource, context)
        lane.snapshots[version.reference] = version
        return Outcome(version, transitions)

    async def _detect_encounter(
        self, version: ResourceVersion, lane: _Lane, view: EncounterView | None
    ) -> Outcome:
        new = view if view is not None else EncounterView.from_raw(version.raw)
        old = lane.views.get(version.reference)
        if old is None and self.cache_views:
            old = self._views.get((version.server, version.id))
        if old is None:
            before = lane.snapshots.get(version.reference) or self._snapshot(lane, version)
            old = EncounterView.from_raw(before.raw) if before is not None else None
        if old is not None and not _view_is_newer(old, new):
            return Outcome(version, newer=False)
        stays: list[Stay] = []
        changed = old is None or old.status != new.status or old.class_code != new.class_code
        grouped = lane.stays.setdefault(new.patient or "", {})
        if new.patient and new.inpatient and changed:
            journalled = self._stays(lane, version.server, new.patient)
            stays = [s for s in journalled if s.encounter not in grouped]
            stays += grouped.values()
            stays += await self.lookups.stays(new)
        transitions = detect_encounter_views(old, new, self.context(version.server, stays))
        grouped[new.reference] = stay_of(new, version.server)
        lane.views[version.reference] = new
        lane.snapshots[version.reference] = version
        return Outcome(version, transitions, view=new)

    async def _plan(self, outcome: Outcome) -> Outcome:
        resource = outcome.version.resource
        plans = [await self.planner.plan(t, resource) for t in outcome.transitions]
        outcome.plans = plans
        outcome.items = [outbox_item(a, p.transition) for p in plans for a in p.actions]
        outcome.notes = {p.transition.key: p.note for p in plans if p.note}
        return outcome

    def context(self, server: str, stays: Sequence[Stay]) -> EncounterContext:
        """What Encounter detection needs besides the two versions."""
        return EncounterContext(
            server=server,
            stays=stays,
            tz=self.tz,
            readmission_window_days=self.readmission_window_days,
            disposition_group=self.disposition_group,
            now=self.clock.now(),
        )

    # -- the projection cache ------------------------------------------------------------
    def remember(self, outcomes: Sequence[Outcome]) -> None:
        """Keep the projections of recorded Encounter snapshots (bounded, oldest out)."""
        if not self.cache_views:
            return
        for outcome in outcomes:
            if outcome.view is None or not outcome.newer or outcome.error is not None:
                continue
            key = (outcome.version.server, outcome.view.id)
            self._views[key] = outcome.view
            self._views.move_to_end(key)
            if len(self._views) > VIEW_CACHE_SIZE:
                self._views.popitem(last=False)

    def forget_views(self) -> None:
        """Drop the projection cache (after a failed commit it may be ahead of the journal)."""
        self._views.clear()


def _view_is_newer(old: EncounterView, new: EncounterView) -> bool:
    """:func:`fhirbridge.detect.is_newer` on projections."""
    old_time, new_time = old.last_updated, new.last_updated
    if old_time is not None and new_time is not None and old_time != new_time:
        return new_time > old_time
    if old.version_id.isdigit() and new.version_id.isdigit():
        return int(new.version_id) > int(old.version_id)
    return old.version_id != new.version_id or old != new
