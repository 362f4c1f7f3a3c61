"""The engine: the pipeline wired for one FHIR server, and its public API.

:class:`Bridge` is what the CLI and embedding services use::

    async with Bridge.from_config(load_config("fhirbridge.yaml")) as bridge:
        stats = await bridge.run_once()

It builds the stages of :mod:`fhirbridge.pipeline` from the configuration and feeds their
one pass loop (:meth:`Bridge.run_pass`) from every driver: the poller (``run_once``,
``run_forever``), the bulk export (``backfill``), the notification receiver and the HL7 v2
paths (which journal, then call ``run_pass``), and ``plan`` (the same pass with writes off,
on a journal of its own). Nothing is acknowledged or a watermark moved before what it
covers is durable.

``Bridge(..., worker=True)`` makes it one worker among several sharing the journal
(PostgreSQL): each pass starts by leasing its share of the patient lanes, processes and
writes only those, and polls (and sweeps timers) only where it holds the leadership lease
(:class:`fhirbridge.pipeline.WorkerLeases`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from fhirbridge.casemgmt import Casework
from fhirbridge.clock import Clock, SystemClock
from fhirbridge.config import Config
from fhirbridge.errors import FhirError, StoreError
from fhirbridge.fhir import client_from_config
from fhirbridge.fhir.client import FhirClient
from fhirbridge.pipeline import (
    Committer,
    Evaluator,
    Feed,
    Lookups,
    Pipeline,
    Planner,
    Policy,
    RunStats,
    Sink,
    Sweeper,
    WorkerLeases,
    WriteStage,
    default_policy,
    poll_lease_name,
    timers_lease_name,
)
from fhirbridge.report import Report, build_report
from fhirbridge.rules import BusinessCalendar, RulePack, load_rules
from fhirbridge.rules.dispositions import DispositionTable, default_table
from fhirbridge.rules.model import Defaults
from fhirbridge.sources.bulk import BulkExport
from fhirbridge.sources.poll import Poller, PollStats
from fhirbridge.store import MemoryStore, Store, open_store
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    Plan,
    ResourceVersion,
    parse_instant,
)
from fhirbridge.writeback.writer import Writer, WriteStats

__all__ = ["Bridge", "RunStats"]

log = structlog.get_logger(__name__)
#: Watermark of the last sweep for duplicated engine resources.
HEAL_MARK = "heal:sweep"


class Bridge:
    """The coordination engine for one FHIR server.

    ``client`` may be None for offline processing (benchmarks, tests of the pure path):
    then nothing is fetched on demand and nothing is written. ``policy`` replaces the
    planning steps beside the rules (:func:`fhirbridge.pipeline.default_policy`).
    ``worker`` shares the journal with other workers through leases (``store.lease_seconds``;
    see the module docstring); ``leases`` gives the leases to use instead (tests).
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
        policy: Sequence[Policy] | None = None,
        worker: bool = False,
        leases: WorkerLeases | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store if store is not None else open_store(config.store.url)
        pack = rules if rules is not None else load_rules(config.rules or None)
        # one disposition table feeds detection and the rules: the pack's
        table = dispositions or pack.dispositions or default_table()
        self.rules = (
            pack if pack.dispositions is table else dataclasses.replace(pack, dispositions=table)
        )
        self.dispositions = table
        self.clock = clock or SystemClock()
        self.progress = progress
        self.server = config.fhir.name
        self.calendar = self._calendar()
        engine = config.engine
        self.policy = tuple(
            policy
            if policy is not None
            else default_policy(
                risk=engine.risk,
                tz=self.calendar.tz,
                max_event_age=engine.max_event_age,
                settings=config.risk,
                configured_tz=engine.timezone,
                pack_tz=self.rules.defaults.timezone,
            )
        )
        writer = (
            Writer(
                client,
                self.store,
                clock=self.clock,
                agent=engine.requester,
                codes=self.rules.codes,
                concurrency=config.engine.concurrency,
            )
            if client is not None
            else None
        )
        # case management: the facts its rules test, looked up when planning and swept
        self.casework = Casework(client, self.rules, server=self.server, calendar=self.calendar)
        if leases is None and worker:
            leases = WorkerLeases(self.store, seconds=config.store.lease_seconds)
        #: this worker's leases on a shared journal (None: the journal's one writer)
        self.leases = leases
        self._keeper: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.pipeline = self._pipeline(self.store, writer, leases)

    @property
    def writer(self) -> Writer | None:
        """What the write stage writes through (None: plan into the outbox, write nothing)."""
        return self.pipeline.write.writer

    @writer.setter
    def writer(self, writer: Writer | None) -> None:
        self.pipeline.write.writer = writer

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
        """Give up a worker's leases (the others take its lanes over at once), close the
        client and the store."""
        if self._keeper is not None:
            self._closing.set()
            await self._keeper
            self._keeper = None
        if self.leases is not None:
            try:
                self.leases.release()
            except StoreError as exc:  # unrenewed, they run out within a lease period
                log.warning("leases_not_released", error=str(exc)[:200])
        if self.client is not None:
            await self.client.aclose()
        self.store.close()

    def _calendar(self) -> BusinessCalendar:
        """The pack's calendar with what ``engine.timezone/weekend/holidays`` set over it."""
        engine = self.config.engine
        overrides = {
            "timezone": engine.timezone,
            "weekend": engine.weekend,
            "holidays": engine.holidays,
        }
        later = Defaults.model_validate({k: v for k, v in overrides.items() if v is not None})
        return self.rules.defaults.merged(later).calendar()

    def _pipeline(
        self, store: Store, writer: Writer | None, leases: WorkerLeases | None = None
    ) -> Pipeline:
        """The stages on ``store``, writing through ``writer`` (None: writes off), on the
        lanes ``leases`` holds (None: all of them)."""
        engine = self.config.engine
        lookups = Lookups(self.client, store, server=self.server)
        planner = Planner(
            self.rules,
            lookups,
            calendar=self.calendar,
            clock=self.clock,
            max_event_age=engine.max_event_age,
            default_owner=engine.default_owner,
            policy=self.policy,
            casework=self.casework,
        )
        evaluator = Evaluator(
            store,
            lookups,
            planner,
            tz=ZoneInfo(self.calendar.tz),
            readmission_window_days=engine.readmission_window_days,
            disposition_group=self.dispositions.group,
            clock=self.clock,
            concurrency=engine.concurrency,
            cache_views=not store.supports_workers,
        )
        return Pipeline(
            store=store,
            lookups=lookups,
            evaluator=evaluator,
            committer=Committer(store, evaluator),
            sweeper=Sweeper(
                self.client,
                store,
                planner,
                server=self.server,
                calendar=self.calendar,
                clock=self.clock,
                interval=engine.sweep_interval,
            ),
            write=WriteStage(writer, leases),
            progress=self.progress,
            leases=leases,
        )

    # -- sources -----------------------------------------------------------------------
    def poller(
        self,
        progress: Callable[[PollStats], None] | None = None,
        sink: Callable[[list[ResourceVersion]], Awaitable[None]] | None = None,
        *,
        store: Store | None = None,
        types: Sequence[str] | None = None,
    ) -> Poller:
        """The polling source for the configured server and ``types`` (default: the watched
        ones); ``sink`` receives each page's new versions once they are journalled."""
        if self.client is None:
            raise FhirError("polling needs a FHIR client")
        return Poller(
            self.client,
            store if store is not None else self.store,
            server=self.server,
            types=list(types) if types is not None else self.config.engine.watch,
            page_size=self.config.fhir.page_size,
            overlap=self.config.engine.overlap,
            progress=progress,
            sink=sink,
        )

    def poll_feed(
        self,
        since: datetime | None = None,
        *,
        store: Store | None = None,
        types: Sequence[str] | None = None,
    ) -> Feed:
        """A poll since the watermarks (or ``since`` on a first run) as a pass's feed."""

        async def feed(sink: Sink, stats: RunStats) -> None:
            def on_poll(poll: PollStats) -> None:
                stats.read, stats.new = poll.read, poll.new
                if self.progress is not None:
                    self.progress("poll", stats)

            poller = self.poller(on_poll, sink, store=store, types=types)
            poll = await poller.poll(since or self.default_since())
            stats.read, stats.new = poll.read, poll.new

        return feed

    def ingest(self, resources: Sequence[bytes | Mapping[str, Any]]) -> list[ResourceVersion]:
        """Journal resources received by push (notifications); returns the new versions."""
        versions = [ResourceVersion.from_json(self.server, r) for r in resources]
        return self.store.append(versions)

    # -- the pass ----------------------------------------------------------------------
    async def run_pass(
        self,
        fresh: Sequence[ResourceVersion] = (),
        *,
        feed: Feed | None = None,
        sweep: bool = False,
        write: bool = True,
        stats: RunStats | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
        batch: int | None = None,
    ) -> RunStats:
        """The one pass loop (:meth:`fhirbridge.pipeline.Pipeline.run_pass`): process
        ``fresh`` and whatever is pending, run ``feed``, sweep when asked, write. A worker
        first leases its share of the lanes (nothing of it is in flight between passes)."""
        self._hold_leases()
        return await self.pipeline.run_pass(
            fresh=fresh, feed=feed, sweep=sweep, write=write, stats=stats, pause=pause, batch=batch
        )

    def _hold_leases(self) -> None:
        """A worker: renew its leases from now on (between passes too, until :meth:`aclose`)
        and take its share of the lanes (nothing of them is in flight between passes)."""
        if self.leases is None:
            return
        if self._keeper is None:
            self._keeper = asyncio.ensure_future(self.leases.keep(self._closing))
        self.leases.rebalance()

    async def process(
        self,
        *,
        batch: int = 500,
        stats: RunStats | None = None,
        fresh: Sequence[ResourceVersion] = (),
    ) -> RunStats:
        """Detect, plan and enqueue for ``fresh`` and then every pending version, in
        arrival order; writes nothing."""
        stats = stats if stats is not None else RunStats()
        self._hold_leases()
        await self.pipeline.process(fresh, stats, batch=batch)
        return await self.pipeline.process(stats=stats, batch=batch)

    async def sweep(self, stats: RunStats | None = None) -> RunStats:
        """Plan the escalation of the engine's overdue open Tasks (see
        :class:`fhirbridge.pipeline.Sweeper`)."""
        return await self.pipeline.sweeper.sweep(stats if stats is not None else RunStats())

    def sweep_due(self) -> bool:
        """Whether ``engine.sweep_interval`` has passed since the last sweep (by the clock)."""
        return self.pipeline.sweeper.due()

    async def drain(self) -> WriteStats:
        """Perform every pending outbox item (a worker: of the lanes it leases, each item
        leased while it is written, as a pass writes them)."""
        if self.writer is None:
            raise FhirError("writing needs a FHIR client")
        self._hold_leases()
        return await self.pipeline.write.write(RunStats())

    # -- whole passes ------------------------------------------------------------------
    def default_since(self) -> datetime:
        """Where a first run starts: now minus ``engine.max_event_age``."""
        return self.clock.now() - self.config.engine.max_event_age

    async def backfill(
        self, *, since: datetime | None = None, progress: Callable[[str], None] | None = None
    ) -> RunStats:
        """Journal the server's history by bulk ``$export`` (watched types, changed since
        ``since``), processing it as it comes, then write it. Transitions older than
        ``engine.max_event_age`` are journalled (readmission look-backs see them) but create
        no work. Polling then carries on from the export's ``transactionTime``."""
        client = self.client
        if client is None:
            raise FhirError("a backfill needs a FHIR client")

        async def feed(sink: Sink, stats: RunStats) -> None:
            exported = await BulkExport(
                client,
                self.store,
                server=self.server,
                types=self.config.engine.watch,
                progress=progress,
                sink=sink,
            ).run(since)
            stats.read, stats.new = exported.read, exported.new
            stats.dead += exported.rejected

        return await self.run_pass(feed=feed)

    async def run_once(self, *, since: datetime | None = None) -> RunStats:
        """Poll, process, write (and sweep when due): one pass. Returns what it did.

        Every ``engine.heal_interval`` seconds the pass also looks for engine resources a
        racing writer left twice, and heals them (:meth:`heal_duplicates`).

        A worker polls only the types whose poll lease it holds, and sweeps and heals only
        while it holds the timers lease; the other workers process and write."""
        types: Sequence[str] | None = None
        timers = True
        if self.leases is not None:
            leases = self.leases
            watch = self.config.engine.watch
            types = [t for t in watch if leases.lead(poll_lease_name(self.server, t))]
            timers = leases.lead(timers_lease_name(self.server))
        feed = self.poll_feed(since, types=types) if types is None or types else None
        stats = await self.run_pass(feed=feed, sweep=timers and self.sweep_due())
        if timers and self._heal_due():
            await self.heal_duplicates()
        return stats

    async def heal_duplicates(self) -> list[str]:
        """Keep the oldest of engine resources that share an identifier, retire the others
        (``entered-in-error``, with a Provenance); returns the references retired."""
        if self.writer is None:
            return []
        retired = await self.writer.heal_duplicates()
        self.store.set_watermark(self.server, HEAL_MARK, self.clock.now().isoformat())
        return retired

    def _heal_due(self) -> bool:
        if self.writer is None:
            return False
        last = parse_instant(self.store.watermark(self.server, HEAL_MARK))
        if last is None:
            return True
        elapsed = abs((self.clock.now() - last).total_seconds())
        return elapsed >= self.config.engine.heal_interval

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Run passes every ``engine.poll_interval`` seconds until ``stop`` is set (the
        :class:`fhirbridge.service.PollingService` loop that ``fhirbridge run`` runs)."""
        from fhirbridge.service import PollingService

        await PollingService(self, stop=stop).run()

    async def plan(self, *, since: datetime | None = None) -> list[Plan]:
        """A dry run: what the engine would detect and write for changes since ``since``,
        as if it had not seen them, and which open Tasks its timers would escalate as of the
        clock. Nothing is written, to the server or the journal."""
        if self.client is None:
            raise FhirError("planning needs a FHIR client")
        journal = MemoryStore()
        dry = self._pipeline(journal, writer=None)
        stats = await dry.run_pass(
            feed=self.poll_feed(since, store=journal),
            sweep=True,
            write=False,
            stats=RunStats(keep_plans=True),
        )
        return stats.plans

    async def report(self) -> Report:
        """Coordination KPIs of the engine's Tasks, read from the server, as of the clock."""
        if self.client is None:
            raise FhirError("a report needs a FHIR client")
        tasks = await self.client.search_all(
            "Task", {"_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}", "_count": 500}
        )
        return build_report(tasks, self.calendar.local_date(self.clock.now()))

    def replay(self, only: int | None = None) -> int:
        """Put dead-lettered work back: dead outbox items to pending, rejected versions back
        on the pending list, unusable inputs re-ingested. Returns how many were put back;
        ``process`` and ``drain`` then retry them (after the cause was fixed).

        ``only`` replays the one dead letter with that id; a dead write (outbox) cannot be
        put back alone, so it puts back every dead write (each is idempotent)."""
        letters = [d for d in self.store.dead_letters() if only is None or d.id == only]
        outbox = only is None or any(d.source == "outbox" for d in letters)
        count = self.store.requeue_dead_outbox() if outbox else 0
        for letter in letters:
            rejected = letter.rejected_version()
            if rejected is not None:
                if not self.store.repend(*rejected):
                    continue
            elif letter.source in ("poll", "notification", "bulk"):
                try:
                    self.ingest([letter.payload])
                except (ValueError, RecursionError) as exc:
                    log.info(
                        "replay_still_unusable", source=letter.source, error=type(exc).__name__
                    )
                    continue
            else:
                continue
            self.store.mark_replayed(letter.id)
            count += 1
        return count
