"""Perform the outbox: write Tasks, CarePlan activities, risk scores and Provenance, once.

The pending items are grouped by the transition that planned them (a write unit) and by
patient (a lane): lanes proceed concurrently, bounded by ``concurrency``; one patient's units
are written in order. A unit goes to the server as one FHIR ``transaction`` Bundle where the
server offers it (conditional creates on the engine's identifiers, the CarePlan by
``If-Match``, one Provenance for the unit), else one request per resource; the writer falls
back by itself when the server refuses transactions or the conditional entries in them.

Every write is idempotent on the server, so a unit performed twice (a crash after the write,
before the outbox noted it) creates nothing the second time. A resource the server refuses
(400 with an OperationOutcome) is dead-lettered alone: the rest of its unit is written.
Two engine resources with one identifier (racing writers) are healed (:mod:`.heal`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from fhirbridge.clock import Clock, SystemClock
from fhirbridge.errors import (
    FhirBridgeError,
    InvalidResource,
    MultipleMatches,
    ProfileError,
    ResourceNotFound,
    ServerError,
    VersionConflict,
)
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.probe import server_profile
from fhirbridge.identity import OBSERVATION_PLACEHOLDER
from fhirbridge.store.base import OutboxItem, Store
from fhirbridge.writeback.actions import OPEN_TASK_STATUSES, handler_for
from fhirbridge.writeback.heal import Healer
from fhirbridge.writeback.lanes import Claim, Lanes
from fhirbridge.writeback.outbox import action_from_payload
from fhirbridge.writeback.session import EachSession, Finish, Session, TransactionSession
from fhirbridge.writeback.units import (
    PER_RESOURCE,
    TRANSACTION,
    WritePath,
    WriteUnit,
    write_units,
)
from fhirbridge.writeback.versioned import CONFLICT_RETRIES

__all__ = ["OBSERVATION_PLACEHOLDER", "OPEN_TASK_STATUSES", "WriteStats", "Writer"]

log = structlog.get_logger(__name__)

#: Errors a retry will not fix: the item goes to the dead letters.
DEAD_ERRORS = (InvalidResource, MultipleMatches, ProfileError, ResourceNotFound)
#: 4xx answers a retry may fix (auth, timeout, conflicts, throttling).
RETRYABLE_4XX = frozenset({401, 403, 408, 409, 412, 429})
#: Answers to a transaction that mean the server does not take them here at all.
NO_TRANSACTIONS = frozenset({404, 405, 501})


@dataclass(slots=True)
class WriteStats:
    """What one drain of the outbox did."""

    created: int = 0
    existing: int = 0
    updated: int = 0
    dead: int = 0
    written: list[str] = field(default_factory=list)


def _is_dead(exc: FhirBridgeError) -> bool:
    if isinstance(exc, DEAD_ERRORS):
        return True
    return (
        isinstance(exc, ServerError)
        and 400 <= exc.status < 500
        and (exc.status not in RETRYABLE_4XX)
    )


def _dead_reason(exc: FhirBridgeError) -> str:
    """The dead letter's reason: the error, and the server's OperationOutcome verbatim."""
    outcome = getattr(exc, "outcome", None)
    if outcome:
        return f"{exc} | OperationOutcome: {json.dumps(outcome, separators=(',', ':'))}"
    return str(exc)


def _multiple_matches(exc: ServerError) -> bool:
    """A 412 that is about a conditional entry matching several resources, not a version."""
    if isinstance(exc, MultipleMatches):
        return True
    return exc.status == 412 and any(
        i.code in ("multiple-matches", "duplicate") or "matched" in i.text for i in exc.issues
    )


class Writer:
    """Performs outbox items against one FHIR server.

    ``concurrency`` bounds how many patients' units are written at once; ``transactions``
    forces the write path (None: choose from the server's CapabilityStatement).
    """

    def __init__(
        self,
        client: FhirClient,
        store: Store,
        *,
        clock: Clock | None = None,
        agent: str = "Device/fhirbridge",
        codes: Mapping[str, str] | None = None,
        concurrency: int = 8,
        transactions: bool | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock or SystemClock()
        self.agent = agent
        self.codes = dict(codes or {})
        self.concurrency = max(1, concurrency)
        self.healer = Healer(client, clock=self.clock, agent=agent)
        #: the CarePlan last seen per patient (its version is what If-Match names)
        self.careplans: dict[str, dict[str, Any]] = {}
        self._path: WritePath | None = (
            None if transactions is None else (TRANSACTION if transactions else PER_RESOURCE)
        )
        self._path_logged = False

    # -- the write path --------------------------------------------------------------------
    @property
    def path(self) -> WritePath | None:
        """``transaction`` or ``per-resource`` (None until :meth:`write_path` decided)."""
        return self._path

    async def write_path(self) -> WritePath:
        """Decide the write path once (from the CapabilityStatement) and log it."""
        reason = "configured"
        if self._path is None:
            profile = await server_profile(self.client, probe=False)
            self._path = profile.write_path
            reason = f"server profile ({profile.transaction.source})"
        if not self._path_logged:
            self._path_logged = True
            log.info("write_path_chosen", path=self._path, reason=reason)
        return self._path

    def _fall_back(self, why: str) -> None:
        if self._path != PER_RESOURCE:
            self._path = PER_RESOURCE
            log.warning("write_path_fallback", path=PER_RESOURCE, reason=why)

    async def searchable_by_identifier(self, kind: str) -> bool:
        """Whether the server searches ``kind`` by identifier (else the engine creates once
        by a PUT of the identifier as id), as the server profile says."""
        profile = await server_profile(self.client, probe=False)
        return profile.searchable_by_identifier(kind)

    # -- draining ----------------------------------------------------------------------------
    async def drain(self, *, batch: int = 200, claim: Claim | None = None) -> WriteStats:
        """Perform every pending item, patients concurrently, each patient's units in order.

        ``claim`` takes the next items (default: every pending one, ``Store.claim_outbox``);
        a worker sharing the journal passes its leased claim, of its lanes' items only.
        A failure a retry may fix (transport, 5xx, 429 after the client's retries) stops the
        drain, leaving its items pending: the lanes writing finish their unit, then it
        propagates.
        """
        stats = WriteStats()
        await self.write_path()

        async def write(unit: WriteUnit) -> None:
            await self.write_unit(unit, stats)

        lanes = Lanes(write, concurrency=self.concurrency, batch=batch)
        await lanes.run(claim if claim is not None else self.store.claim_outbox)
        return stats

    async def perform(self, item: OutboxItem, stats: WriteStats | None = None) -> None:
        """Perform one item (a unit of its own) and record the outcome in the store."""
        stats = stats if stats is not None else WriteStats()
        await self.write_path()
        await self.write_unit(write_units([item])[0], stats)

    async def write_unit(self, unit: WriteUnit, stats: WriteStats) -> None:
        """Write one unit on the current path, falling back per resource where needed."""
        if await self.write_path() == TRANSACTION:
            fallback = await self._transaction(unit, stats)
            if fallback is None:
                return
            dead_before = stats.dead
            await self._each(unit, stats)
            if isinstance(fallback, InvalidResource) and stats.dead == dead_before:
                # each resource alone was accepted: the server refuses the transaction form
                self._fall_back(f"transaction refused ({fallback.status}): {fallback}")
            return
        await self._each(unit, stats)

    def _dead(self, item: OutboxItem, exc: FhirBridgeError, stats: WriteStats) -> None:
        stats.dead += 1
        self.store.fail_outbox(item.id, _dead_reason(exc), dead=True)
        log.warning(
            "write_dead_lettered",
            kind=item.kind,
            key=item.key,
            error=type(exc).__name__,
            status=getattr(exc, "status", None),
        )

    async def _transaction(self, unit: WriteUnit, stats: WriteStats) -> ServerError | None:
        """Write ``unit`` as one transaction. Returns the error that sends it down the
        per-resource path instead (None when it was written)."""
        for _ in range(CONFLICT_RETRIES):
            session = TransactionSession(self, unit)
            try:
                finishes = [await self._stage(session, item, stats) for item in unit.items]
            except (ProfileError, ResourceNotFound, InvalidResource) as exc:
                # one item cannot be staged: the per-resource path isolates it
                return InvalidResource(str(exc), status=getattr(exc, "status", 400))
            except FhirBridgeError as exc:
                self._note_failure(unit, exc)
                raise
            try:
                await session.finish()
            except ServerError as exc:
                if _multiple_matches(exc):
                    return MultipleMatches(str(exc), status=exc.status, issues=exc.issues)
                if isinstance(exc, VersionConflict):
                    # the CarePlan or a Task changed since last seen: re-read and rebuild
                    self.careplans.pop(unit.patient, None)
                    continue
                if exc.status in NO_TRANSACTIONS:
                    self._fall_back(f"the server answered {exc.status} to a transaction")
                    return exc
                if isinstance(exc, InvalidResource):
                    return exc
                self._note_failure(unit, exc)
                raise
            except FhirBridgeError as exc:
                self._note_failure(unit, exc)
                raise
            for item, finish in zip(unit.items, finishes, strict=True):
                self.store.finish_outbox(item.id, finish())
            return None
        conflict = VersionConflict(
            f"the CarePlan of the unit kept changing ({CONFLICT_RETRIES} tries)", status=412
        )
        self._note_failure(unit, conflict)
        raise conflict

    async def _stage(self, session: Session, item: OutboxItem, stats: WriteStats) -> Finish:
        action = action_from_payload(item.kind, item.payload)
        return await handler_for(action)(session, action, stats)

    def _note_failure(self, unit: WriteUnit, exc: FhirBridgeError) -> None:
        for item in unit.items:
            self.store.fail_outbox(item.id, str(exc), dead=False)

    async def _each(self, unit: WriteUnit, stats: WriteStats) -> None:
        """Write ``unit`` one request at a time: a refused resource is dead-lettered alone,
        the rest of the unit is written, then the unit's one Provenance."""
        session = EachSession(self, unit)
        done: list[tuple[OutboxItem, Finish]] = []
        failure: FhirBridgeError | None = None
        for item in unit.items:
            try:
                done.append((item, await self._stage(session, item, stats)))
            except FhirBridgeError as exc:
                if _is_dead(exc):
                    self._dead(item, exc, stats)
                    continue
                self.store.fail_outbox(item.id, str(exc), dead=False)
                failure = exc
                break
        try:
            await session.finish()
        except FhirBridgeError as exc:
            for item, _ in done:
                self.store.fail_outbox(item.id, str(exc), dead=False)
            raise
        for item, finish in done:
            self.store.finish_outbox(item.id, finish())
        if failure is not None:
            raise failure

    # -- duplicates --------------------------------------------------------------------------
    async def heal_duplicates(self) -> list[str]:
        """Sweep the server for engine resources that share an identifier and heal them
        (keep the oldest, retire the others); returns the references retired."""
        retired = await self.healer.sweep()
        if retired:  # a retired CarePlan may be one the writer remembers
            self.careplans.clear()
        return retired
