"""The engine: poll -> journal -> detect -> rules -> outbox -> write-back, as one object.

:class:`Bridge` is what the CLI and embedding services use::

    async with Bridge.from_config(load_config("fhirbridge.yaml")) as bridge:
        stats = await bridge.run_once()

The decisions are pure (``detect``, ``rules``); this module gathers their inputs (the
previous snapshot, the patient's stays, Patient and CareTeam), performs their effects
through the store and the writer, and never acknowledges or moves a watermark before
what it covers is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from fhirbridge.casemgmt import Casework
from fhirbridge.clock import Clock, SystemClock
from fhirbridge.config import Config
from fhirbridge.context import PatientContext
from fhirbridge.detect import DetectContext, EncounterContext, detect, is_newer, local_reference
from fhirbridge.detect.encounter import detect_encounter_views
from fhirbridge.detect.projection import EncounterView
from fhirbridge.detect.timers import overdue_transition
from fhirbridge.errors import FhirError
from fhirbridge.fhir import client_from_config
from fhirbridge.fhir.client import FhirClient
from fhirbridge.report import Report, build_report
from fhirbridge.riskcontext import fetch_inputs, score, score_actions
from fhirbridge.rules import BusinessCalendar, PlanContext, RulePack, load_rules
from fhirbridge.rules.dispositions import DispositionTable, default_table
from fhirbridge.rules.evaluate import TIMER_KINDS
from fhirbridge.sources.bulk import BulkExport
from fhirbridge.sources.poll import Poller, PollStats
from fhirbridge.store import MemoryStore, PostgresStore, Store, open_store
from fhirbridge.store.base import OutboxItem, Stay
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    Action,
    CloseActivity,
    Plan,
    ResourceVersion,
    Transition,
    TransitionKind,
    parse_instant,
)
from fhirbridge.writeback.outbox import outbox_item
from fhirbridge.writeback.writer import OPEN_TASK_STATUSES, Writer, WriteStats

__all__ = ["Bridge", "RunStats"]

log = structlog.get_logger(__name__)
SWEEP_MARK = "timers:sweep"
VIEW_CACHE_SIZE = 50_000
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(slots=True)
class RunStats:
    """What one pass of the engine did."""

    read: int = 0
    new: int = 0
    processed: int = 0
    transitions: int = 0
    planned: int = 0
    created: int = 0
    existing: int = 0
    updated: int = 0
    dead: int = 0
    keep_plans: bool = False
    plans: list[Plan] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The pass's figures by name (what a log event or ``--json`` carries)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("plans", "keep_plans")
        }

    def summary(self) -> str:
        """One human line."""
        return (
            f"read {self.read} ({self.new} new), processed {self.processed}, "
            f"transitions {self.transitions}, planned writes {self.planned}, "
            f"tasks created {self.created} (already there {self.existing}), "
            f"status changes {self.updated}, dead letters {self.dead}"
        )


class Bridge:
    """The coordination engine for one FHIR server.

    ``client`` may be None for offline processing (benchmarks, tests of the pure path):
    then nothing is fetched on demand and nothing is written.
    """

    def __init__(
        self,
        config: Config,
        *,
        client: FhirClient | None = None,
        store: Store | None = None,
        rules: RulePack | None = None,
        clock: Clock | None = None,
        dispositions: DispositionTable | None = None,
        progress: Callable[[str, RunStats], None] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store if store is not None else open_store(config.store.url)
        self.rules = rules if rules is not None else load_rules(config.rules or None)
        self.clock = clock or SystemClock()
        self.dispositions = dispositions or default_table()
        self.progress = progress
        self.server = config.fhir.name
        self.calendar = self._calendar()
        self.context = PatientContext(
            client,
            self.store,
            server=self.server,
            readmission_window_days=config.engine.readmission_window_days,
        )
        self._tz = ZoneInfo(self.calendar.tz)
        self.casework = Casework(client, self.rules, server=self.server, calendar=self.calendar)
        # projections of the newest Encounter snapshots: a single writer may trust them; with
        # several workers sharing PostgreSQL, another worker may have moved a snapshot on
        self._views: OrderedDict[tuple[str, str], EncounterView] = OrderedDict()
        self._cache_views = not isinstance(self.store, PostgresStore)
        # stays evaluated in the current group, not yet in the journal's encounter index
        self._group_stays: dict[str, dict[str, Stay]] = {}
        self.writer = (
            Writer(
                client,
                self.store,
                clock=self.clock,
                agent=config.engine.requester,
                codes=self.rules.codes,
            )
            if client is not None
            else None
        )

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Bridge:
        """A bridge with the client and store the configuration describes."""
        kwargs.setdefault("client", client_from_config(config.fhir))
        return cls(config, **kwargs)

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client and the store."""
        if self.client is not None:
            await self.client.aclose()
        self.store.close()

    def _calendar(self) -> BusinessCalendar:
        engine = self.config.engine
        pack = self.rules.defaults
        weekend = (
            frozenset(_WEEKDAYS[d] for d in engine.weekend)
            if engine.weekend is not None
            else frozenset(pack.weekend)
            if pack.weekend is not None
            else frozenset({5, 6})
        )
        holidays = engine.holidays if engine.holidays is not None else pack.holidays or ()
        return BusinessCalendar(
            tz=engine.timezone or pack.timezone or "UTC",
            weekend=weekend,
            holidays=frozenset(holidays),
        )

    # -- ingest ------------------------------------------------------------------------
    def poller(
        self,
        progress: Callable[[PollStats], None] | None = None,
        sink: Callable[[list[ResourceVersion]], Awaitable[None]] | None = None,
    ) -> Poller:
        """The polling source for the configured server and types; ``sink`` receives each
        page's new versions once they are journalled."""
        if self.client is None:
            raise FhirError("polling needs a FHIR client")
        return Poller(
            self.client,
            self.store,
            server=self.server,
            types=self.config.engine.watch,
            page_size=self.config.fhir.page_size,
            overlap=self.config.engine.overlap,
            progress=progress,
            sink=sink,
        )

    def ingest(self, resources: Sequence[bytes | Mapping[str, Any]]) -> list[ResourceVersion]:
        """Journal resources received by push (notifications); returns the new versions."""
        versions = [ResourceVersion.from_json(self.server, r) for r in resources]
        return self.store.append(versions)

    # -- process -----------------------------------------------------------------------
    async def process(
        self,
        *,
        batch: int = 500,
        stats: RunStats | None = None,
        fresh: Sequence[ResourceVersion] = (),
    ) -> RunStats:
        """Detect, plan and enqueue for pending versions, in arrival order.

        ``fresh`` are versions just journalled (and still parsed in memory): they are
        processed first without reading them back; then whatever else is pending.
        """
        stats = stats or RunStats()
        if fresh:
            await self._process_many(fresh, stats)
        while True:
            pending = self.store.pending(batch)
            if not pending:
                return stats
            await self._process_many(pending, stats)
            if self.progress is not None:
                self.progress("process", stats)

    async def process_version(self, version: ResourceVersion, stats: RunStats) -> list[Plan]:
        """Process one journalled version (atomically in the store)."""
        outcome = await self._evaluate(version, stats)
        self._commit([outcome], stats)
        return outcome.plans

    async def _process_many(self, versions: Sequence[ResourceVersion], stats: RunStats) -> None:
        """Evaluate versions in order and record their outcomes in as few transactions as
        is safe: a group is committed before a version whose resource or patient it already
        touched, so every evaluation reads the journal as of the versions before it."""
        group: list[_Outcome] = []
        touched: set[str] = set()
        for version in versions:
            marks = {version.reference}
            if version.resource_type != "Encounter":
                # Encounters see the group's other stays (below); other types read the
                # patient's journalled state, so a patient seen in the group flushes it
                patient = local_reference(
                    version.resource.get("subject") or version.resource.get("for")
                )
                if patient:
                    marks.add(patient)
            if marks & touched:
                self._commit(group, stats)
                group, touched = [], set()
            group.append(await self._evaluate(version, stats))
            touched |= marks
        self._commit(group, stats)

    def _commit(self, outcomes: Sequence[_Outcome], stats: RunStats) -> None:
        """Record outcomes in one transaction (no awaits inside: nothing interleaves)."""
        self._group_stays.clear()
        if not outcomes:
            return
        try:
            with self.store.batch():
                for outcome in outcomes:
                    if outcome.rejected:
                        self.store.reject(outcome.version, outcome.rejected)
                    else:
                        self.store.complete(
                            outcome.version,
                            transitions=outcome.transitions,
                            outbox=outcome.items,
                            notes=outcome.notes,
                            update_snapshot=outcome.newer,
                        )
        except Exception:
            self._views.clear()
            raise
        for outcome in outcomes:
            if outcome.view is not None and outcome.newer:
                self._remember(outcome.version.server, outcome.view)
            stats.transitions += len(outcome.transitions)
            stats.planned += len(outcome.items)
            if stats.keep_plans:
                stats.plans.extend(outcome.plans)
            for transition in outcome.transitions:
                log.info(
                    "transition_detected",
                    kind=transition.kind.value,
                    resource=transition.focus,
                    planned=sum(
                        len(p.actions) for p in outcome.plans if p.transition is transition
                    ),
                )

    async def _evaluate(self, version: ResourceVersion, stats: RunStats) -> _Outcome:
        """Detect and plan for one version; writes nothing."""
        stats.processed += 1
        view: EncounterView | None = None
        try:
            if version.resource_type == "Encounter":
                found = await self._encounter_transitions(version)
                if found is None:  # a late, older version: journalled, ignored
                    return _Outcome(version, newer=False)
                transitions, view = found
            else:
                before = self.store.snapshot(version.server, version.resource_type, version.id)
                if before is not None and not is_newer(before.resource, version.resource):
                    return _Outcome(version, newer=False)
                context = DetectContext(encounter=self._encounter_context(version.server, ()))
                previous = before.resource if before is not None else None
                transitions = detect(previous, version.resource, context)
            plans = [await self._plan(t, version) for t in transitions]
        except FhirError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            stats.dead += 1
            return _Outcome(version, rejected=f"cannot process {version.reference}: {exc!r}")
        items = [outbox_item(a, plan.transition) for plan in plans for a in plan.actions]
        notes = {p.transition.key: p.note for p in plans if p.note}
        return _Outcome(version, transitions, plans, items, notes, view)

    def _remember(self, server: str, view: EncounterView) -> None:
        """Keep the projection of the newest Encounter snapshot (bounded, oldest out)."""
        key = (server, view.id)
        self._views[key] = view
        self._views.move_to_end(key)
        if len(self._views) > VIEW_CACHE_SIZE:
            self._views.popitem(last=False)

    async def _encounter_transitions(
        self, version: ResourceVersion
    ) -> tuple[list[Transition], EncounterView] | None:
        """Transitions of an Encounter version, from cached projections where possible;
        None for a version older than the snapshot."""
        new = EncounterView.of(version.resource)
        old = self._views.get((version.server, version.id)) if self._cache_views else None
        if old is None:
            before = self.store.snapshot(version.server, "Encounter", version.id)
            old = EncounterView.of(before.resource) if before is not None else None
        if old is not None and not _view_is_newer(old, new):
            return None
        stays: list[Stay] = []
        changed = old is None or old.status != new.status or old.class_code != new.class_code
        grouped = self._group_stays.setdefault(new.patient or "", {})
        if new.patient and new.inpatient and changed:
            journalled = self.store.stays(version.server, new.patient)
            stays = [s for s in journalled if s.encounter not in grouped]
            stays += grouped.values()
            stays += await self.context.stays_from_server(new)
        context = self._encounter_context(version.server, stays)
        transitions = detect_encounter_views(old, new, context)
        grouped[new.reference] = Stay(
            server=version.server,
            encounter=new.reference,
            patient=new.patient or "",
            encounter_class=new.class_code,
            status=new.status,
            start=new.start,
            end=new.end,
        )
        return transitions, new

    def _encounter_context(self, server: str, stays: Sequence[Stay]) -> EncounterContext:
        return EncounterContext(
            server=server,
            stays=stays,
            tz=self._tz,
            readmission_window_days=self.config.engine.readmission_window_days,
            disposition_group=self.dispositions.group,
            now=self.clock.now(),
        )

    def forget_context(self) -> None:
        """Drop the per-run caches (patients, care teams, server stays)."""
        self.context.forget()

    async def _plan(self, transition: Transition, version: ResourceVersion | None = None) -> Plan:
        patient = await self.context.patient(transition.patient)
        care_team = await self.context.care_team(transition.patient)
        now = self.clock.now()
        tiers: dict[str, str] = {}
        extra: list[Action] = []
        recent = now - transition.occurred_at <= self.config.engine.max_event_age
        if (
            transition.kind is TransitionKind.DISCHARGE
            and version is not None
            and self.config.engine.risk
            and self.client is not None
            and recent
        ):
            inputs = await fetch_inputs(self.client, transition.patient)
            results = score(version.resource, inputs, ZoneInfo(self.calendar.tz))
            tiers = {name: result.tier for name, result in results.items()}
            extra.extend(score_actions(results, transition, now))
        if transition.kind is TransitionKind.TASK_COMPLETED:
            extra.append(
                CloseActivity(
                    task=transition.focus,
                    patient=transition.patient,
                    outcome="completed",
                    transition_key=transition.key,
                )
            )
        # case management: the lookups its rules test (coverage, CarePlan, referrals,
        # no-shows, latest risk tiers), only for transitions that can still create work
        timer = transition.kind in TIMER_KINDS
        case = await self.casework.facts(transition) if recent or timer else None
        context = PlanContext(
            now=now,
            calendar=self.calendar,
            max_event_age=self.config.engine.max_event_age,
            patient=patient,
            care_team=care_team,
            default_owner=self.config.engine.default_owner,
            risk=tiers or (dict(case.risk) if case else {}),
            case=case.case if case else {},
        )
        plan = self.rules.plan(transition, context)
        if extra:
            plan = Plan(transition=plan.transition, actions=(*plan.actions, *extra), note=plan.note)
        return plan

    # -- timers --------------------------------------------------------------------------
    async def sweep(self, stats: RunStats | None = None) -> RunStats:
        """Find the engine's open Tasks past their due date and plan their escalation:
        ``referral-overdue`` for a referral's tracking Task, ``task-overdue`` otherwise.

        Escalations have deterministic identifiers, so sweeping again (or late) escalates
        each overdue Task exactly once. Timers ignore ``engine.max_event_age``.
        """
        stats = stats or RunStats()
        if self.client is None:
            return stats
        now = self.clock.now()
        today = self.calendar.local_date(now)
        tasks = await self.client.search_all(
            "Task",
            {
                "_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}",
                "status": ",".join(OPEN_TASK_STATUSES),
                "_count": 200,
            },
        )
        items: list[OutboxItem] = []
        for task in tasks:
            transition = overdue_transition(task, today, server=self.server)
            if transition is None:
                continue
            plan = await self._plan(transition)
            stats.transitions += 1
            if stats.keep_plans:
                stats.plans.append(plan)
            items.extend(outbox_item(action, transition) for action in plan.actions)
        # case management: periodic CarePlan reviews and completion, on the same sweep
        for transition in await self.casework.sweep(today):
            plan = await self._plan(transition)
            stats.transitions += 1
            if stats.keep_plans:
                stats.plans.append(plan)
            items.extend(outbox_item(action, transition) for action in plan.actions)
        stats.planned += self.store.enqueue(items)
        self.store.set_watermark(self.server, SWEEP_MARK, now.isoformat())
        log.info("sweep_done", open_tasks=len(tasks), overdue=stats.transitions)
        return stats

    def sweep_due(self) -> bool:
        """Whether ``engine.sweep_interval`` has passed since the last sweep (by the clock)."""
        last = parse_instant(self.store.watermark(self.server, SWEEP_MARK))
        if last is None:
            return True
        elapsed = abs((self.clock.now() - last).total_seconds())
        return elapsed >= self.config.engine.sweep_interval

    # -- write -------------------------------------------------------------------------
    async def drain(self) -> WriteStats:
        """Perform every pending outbox item."""
        if self.writer is None:
            raise FhirError("writing needs a FHIR client")
        return await self.writer.drain()

    # -- whole passes ------------------------------------------------------------------
    def default_since(self) -> datetime:
        """Where a first run starts: now minus ``engine.max_event_age``."""
        return self.clock.now() - self.config.engine.max_event_age

    async def backfill(
        self, *, since: datetime | None = None, progress: Callable[[str], None] | None = None
    ) -> RunStats:
        """Journal the server's history by bulk ``$export`` (watched types, changed since
        ``since``), then process and write it. Transitions older than
        ``engine.max_event_age`` are journalled (readmission look-backs see them) but create
        no work. Polling then carries on from the export's ``transactionTime``."""
        if self.client is None:
            raise FhirError("a backfill needs a FHIR client")
        exported = await BulkExport(
            self.client,
            self.store,
            server=self.server,
            types=self.config.engine.watch,
            progress=progress,
        ).run(since)
        stats = RunStats(read=exported.read, new=exported.new, dead=exported.rejected)
        await self._flush(stats)
        return stats

    async def run_once(self, *, since: datetime | None = None) -> RunStats:
        """Poll, process, write: one pass. Returns what it did."""
        stats = RunStats()
        self.forget_context()

        def on_poll(poll: PollStats) -> None:
            stats.read, stats.new = poll.read, poll.new
            if self.progress is not None:
                self.progress("poll", stats)

        # pending work from a previous, interrupted run goes first
        await self._flush(stats)

        async def on_page(fresh: list[ResourceVersion]) -> None:
            await self.process(stats=stats, fresh=fresh)

        poll = await self.poller(on_poll, on_page).poll(since or self.default_since())
        stats.read, stats.new = poll.read, poll.new
        await self._flush(stats)
        if self.sweep_due():
            await self.sweep(stats)
            await self._flush(stats)
        return stats

    async def _flush(self, stats: RunStats) -> None:
        await self.process(stats=stats)
        written = await self.drain()
        stats.created += written.created
        stats.existing += written.existing
        stats.updated += written.updated
        stats.dead += written.dead

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Run passes every ``engine.poll_interval`` seconds until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            stats = await self.run_once()
            log.info("run_pass", **stats.counts())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.engine.poll_interval)

    async def plan(self, *, since: datetime | None = None) -> list[Plan]:
        """A dry run: what the engine would detect and write for changes since ``since``,
        as if it had not seen them, and which open Tasks its timers would escalate as of the
        clock. Nothing is written, to the server or the journal."""
        if self.client is None:
            raise FhirError("planning needs a FHIR client")
        shadow = Bridge(
            self.config,
            client=self.client,
            store=MemoryStore(),
            rules=self.rules,
            clock=self.clock,
            dispositions=self.dispositions,
        )
        shadow.writer = None
        await shadow.poller().poll(since or self.default_since())
        stats = await shadow.process(stats=RunStats(keep_plans=True))
        await shadow.sweep(stats)
        return stats.plans

    async def report(self) -> Report:
        """Coordination KPIs of the engine's Tasks, read from the server, as of the clock."""
        if self.client is None:
            raise FhirError("a report needs a FHIR client")
        tasks = await self.client.search_all(
            "Task", {"_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}", "_count": 500}
        )
        return build_report(tasks, self.calendar.local_date(self.clock.now()))

    def replay(self) -> int:
        """Put dead-lettered work back: dead outbox items to pending, rejected versions back
        on the pending list, unusable inputs re-ingested. Returns how many were put back;
        ``process`` and ``drain`` then retry them (after the cause was fixed)."""
        count = self.store.requeue_dead_outbox()
        for letter in self.store.dead_letters():
            if letter.source == "process":
                server, _, ref = letter.reference.partition("|")
                kind, rid, _, version = [*ref.split("/"), "", "", "", ""][:4]
                if not self.store.repend(server, kind, rid, version):
                    continue
            elif letter.source in ("poll", "notification", "bulk"):
                try:
                    self.ingest([letter.payload])
                except ValueError:
                    continue  # still not a usable resource
            else:
                continue
            self.store.mark_replayed(letter.id)
            count += 1
        return count


@dataclass(slots=True)
class _Outcome:
    """What evaluating one version decided, before it is recorded."""

    version: ResourceVersion
    transitions: list[Transition] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    items: list[OutboxItem] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    view: EncounterView | None = None
    newer: bool = True
    rejected: str = ""


def _view_is_newer(old: EncounterView, new: EncounterView) -> bool:
    """:func:`fhirbridge.detect.is_newer` on projections."""
    old_time, new_time = old.last_updated, new.last_updated
    if old_time is not None and new_time is not None and old_time != new_time:
        return new_time > old_time
    if old.version_id.isdigit() and new.version_id.isdigit():
        return int(new.version_id) > int(old.version_id)
    return old.version_id != new.version_id or old != new
