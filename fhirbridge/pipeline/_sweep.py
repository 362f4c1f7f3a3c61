"""The sweep stage: the engine's open Tasks past their due date -> escalation plans.

``referral-overdue`` for a referral's tracking Task, ``task-overdue`` otherwise; then the
case-management timers (:meth:`fhirbridge.casemgmt.Casework.sweep`: periodic CarePlan
reviews and completion), planned the same way. Escalations
have deterministic identifiers, so sweeping again (or late) escalates each overdue Task
exactly once. Timers ignore ``engine.max_event_age``.
"""

from __future__ import annotations

import structlog

from fhirbridge.clock import Clock
from fhirbridge.detect.timers import overdue_transition
from fhirbridge.fhir.client import FhirClient
from fhirbridge.pipeline._plan import Planner
from fhirbridge.pipeline._stats import RunStats
from fhirbridge.rules import BusinessCalendar
from fhirbridge.store.base import OutboxItem, Store
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, Transition, parse_instant
from fhirbridge.writeback.outbox import outbox_item
from fhirbridge.writeback.writer import OPEN_TASK_STATUSES

__all__ = ["SWEEP_MARK", "Sweeper"]

log = structlog.get_logger(__name__)
SWEEP_MARK = "timers:sweep"


class Sweeper:
    """Finds overdue engine Tasks on one server and plans their escalation."""

    def __init__(
        self,
        client: FhirClient | None,
        store: Store,
        planner: Planner,
        *,
        server: str,
        calendar: BusinessCalendar,
        clock: Clock,
        interval: float,
    ) -> None:
        self.client = client
        self.store = store
        self.planner = planner
        self.server = server
        self.calendar = calendar
        self.clock = clock
        self.interval = interval

    def due(self) -> bool:
        """Whether ``interval`` seconds have passed since the last sweep (by the clock)."""
        last = parse_instant(self.store.watermark(self.server, SWEEP_MARK))
        if last is None:
            return True
        return abs((self.clock.now() - last).total_seconds()) >= self.interval

    async def sweep(self, stats: RunStats) -> RunStats:
        """Plan the escalation of every overdue open Task into the outbox."""
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
        overdue: list[Transition] = [
            t
            for t in (overdue_transition(task, today, server=self.server) for task in tasks)
            if t is not None
        ]
        casework = self.planner.casework
        due = await casework.sweep(today) if casework is not None else []
        timers = [*overdue, *due]
        await self.planner.prefetch([(t, None) for t in timers])
        items: list[OutboxItem] = []
        for transition in timers:
            plan = await self.planner.plan(transition)
            stats.transitions += 1
            if stats.keep_plans:
                stats.plans.append(plan)
            items.extend(outbox_item(action, transition) for action in plan.actions)
        stats.planned += self.store.enqueue(items)
        self.store.set_watermark(self.server, SWEEP_MARK, now.isoformat())
        log.info("sweep_done", open_tasks=len(tasks), overdue=len(overdue), casework=len(due))
        return stats
