"""The action registry: how each kind of outbox item is written.

One handler per action kind, registered with :func:`handles`. A handler says what to write
through a :class:`~fhirbridge.writeback.session.Session` (so the same code serves the
transaction and the per-resource paths) and returns a function that, once the session is
finished, gives the outbox item's result and notes stats, audit and log events.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.riskassessment import RiskAssessment
from pydantic import ValidationError

from fhirbridge.errors import ProfileError
from fhirbridge.identity import OBSERVATION_PLACEHOLDER
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    TASK_CODE_SYSTEM,
    Action,
    CancelTasks,
    CloseActivity,
    CompleteCarePlan,
    CompleteTasks,
    CreateReferral,
    CreateTask,
    RecordRisk,
)
from fhirbridge.writeback.build import build_task
from fhirbridge.writeback.casework import build_referral
from fhirbridge.writeback.session import Finish, Session

if TYPE_CHECKING:
    from fhirbridge.writeback.writer import WriteStats

__all__ = [
    "HANDLERS",
    "Handler",
    "OPEN_TASK_STATUSES",
    "handler_for",
    "handles",
]

log = structlog.get_logger(__name__)
OPEN_TASK_STATUSES = (
    "draft",
    "requested",
    "received",
    "accepted",
    "ready",
    "in-progress",
    "on-hold",
)

A = TypeVar("A", bound=Action)
#: Writes one action through a session; returns how to report it once the session is done.
Handler = Callable[[Session, Any, "WriteStats"], Awaitable[Finish]]
HANDLERS: dict[type[Any], Handler] = {}


def handles(
    kind: type[A],
) -> Callable[[Callable[[Session, A, WriteStats], Awaitable[Finish]]], Any]:
    """Register the handler of one action type."""

    def register(
        handler: Callable[[Session, A, WriteStats], Awaitable[Finish]],
    ) -> Callable[[Session, A, WriteStats], Awaitable[Finish]]:
        HANDLERS[kind] = handler
        return handler

    return register


def _validate_as(resource: Mapping[str, Any]) -> None:
    model = Observation if resource.get("resourceType") == "Observation" else RiskAssessment
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise ProfileError(f"{resource.get('resourceType')} is not valid FHIR: {exc}") from exc


@handles(CreateTask)
async def create_task(session: Session, action: CreateTask, stats: WriteStats) -> Finish:
    """A coordination Task by conditional create, named by the patient's CarePlan."""
    writer = session.writer
    careplan = await session.careplan(action.patient) if action.add_to_careplan else None
    task = build_task(
        action,
        authored_on=writer.clock.now(),
        requester=writer.agent,
        careplan=careplan.ref if careplan else None,
        codes=writer.codes,
    )
    handle = await session.create_once(task, action.identifier)
    if careplan is not None:
        await session.add_activity(action.patient, handle, action.identifier)
    kind = session.unit.transition.get("kind", "transition")
    session.reasons.append(f"rule {action.rule_id} on {kind}")

    def finish() -> Mapping[str, Any]:
        ref = handle.reference
        if handle.created:
            stats.created += 1
            stats.written.append(ref)
            log.info("task_written", rule_id=action.rule_id, code=action.code, resource=ref)
        else:
            stats.existing += 1
        writer.store.audit(
            "create-task",
            ref,
            {"rule": action.rule_id, "created": handle.created, "identifier": action.identifier},
        )
        return {
            "task": ref,
            "created": handle.created,
            "careplan": careplan.reference if careplan else None,
        }

    return finish


@handles(RecordRisk)
async def record_risk(session: Session, action: RecordRisk, stats: WriteStats) -> Finish:
    """The score Observation, then the RiskAssessment based on it (each created once)."""
    writer = session.writer
    observation = dict(action.observation)
    _validate_as(observation)
    by_id = await writer.searchable_by_identifier("Observation")
    scored = await session.create_once(
        observation, f"{action.identifier}-observation", by_identifier=by_id
    )
    assessment = json.loads(
        json.dumps(action.risk_assessment).replace(OBSERVATION_PLACEHOLDER, scored.ref)
    )
    _validate_as(assessment)
    by_id = await writer.searchable_by_identifier("RiskAssessment")
    assessed = await session.create_once(assessment, action.identifier, by_identifier=by_id)
    session.reasons.append(f"{action.score} score")

    def finish() -> Mapping[str, Any]:
        ref = assessed.reference
        if assessed.created:
            stats.written.append(ref)
        writer.store.audit(
            "record-risk", ref, {"score": action.score, "total": action.total, "tier": action.tier}
        )
        log.info("risk_written", score=action.score, tier=action.tier, resource=scored.reference)
        return {"observation": scored.reference, "risk_assessment": ref}

    return finish


async def _engine_tasks(
    session: Session, params: Mapping[str, str], *, encounter: str | None = None
) -> list[dict[str, Any]]:
    query = {**params, "_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"}
    tasks = await session.writer.client.search_all("Task", query)
    return [
        t
        for t in tasks
        if t.get("status") in OPEN_TASK_STATUSES
        and (encounter is None or (t.get("encounter") or {}).get("reference") == encounter)
    ]


async def _set_status(
    session: Session, tasks: list[dict[str, Any]], status: str, reason: str, stats: WriteStats
) -> Finish:
    writer = session.writer
    now = writer.clock.now().isoformat()

    def change(task: dict[str, Any]) -> bool:
        if task.get("status") not in OPEN_TASK_STATUSES:
            return False
        task["status"] = status
        task["statusReason"] = {"text": reason}
        task["lastModified"] = now
        return True

    handles_ = [h for h in [await session.change(t, change) for t in tasks] if h is not None]
    if handles_:
        session.reasons.append(reason)

    def finish() -> Mapping[str, Any]:
        changed = [h.reference for h in handles_]
        for ref in changed:
            stats.updated += 1
            writer.store.audit(f"task-{status}", ref, {"reason": reason})
            log.info("task_status_changed", resource=ref, status=status)
        return {"tasks": changed, "status": status}

    return finish


@handles(CancelTasks)
async def cancel_tasks(session: Session, action: CancelTasks, stats: WriteStats) -> Finish:
    """The patient's open engine Tasks (of one focus or encounter) to ``action.status``."""
    query = {"patient": action.patient}
    if action.focus:
        query["focus"] = action.focus
    tasks = await _engine_tasks(session, query, encounter=action.encounter)
    return await _set_status(session, tasks, action.status, action.reason, stats)


@handles(CompleteTasks)
async def complete_tasks(session: Session, action: CompleteTasks, stats: WriteStats) -> Finish:
    """The open engine Tasks with one focus (given ``action.code``, of that engine Task code
    only: asked of the server, and checked again for servers that ignore ``code``) to
    completed."""
    query = {"focus": action.focus}
    if action.code:
        query["code"] = f"{TASK_CODE_SYSTEM}|{action.code}"
    tasks = [
        t
        for t in await _engine_tasks(session, query)
        if not action.code
        or any(c.get("code") == action.code for c in (t.get("code") or {}).get("coding") or ())
    ]
    return await _set_status(session, tasks, "completed", action.reason, stats)


@handles(CloseActivity)
async def close_activity(session: Session, action: CloseActivity, stats: WriteStats) -> Finish:
    """Note the outcome on the CarePlan activity of a Task the EHR finished."""
    now = session.writer.clock.now().isoformat()
    careplan = await session.existing_careplan(action.patient)

    def change(body: dict[str, Any]) -> bool:
        match = [
            a
            for a in body.get("activity") or []
            if (a.get("reference") or {}).get("reference") == action.task
        ]
        if not match or match[0].get("outcomeCodeableConcept"):
            return False
        match[0]["outcomeCodeableConcept"] = [{"text": action.outcome}]
        match[0]["progress"] = [{"time": now, "text": f"{action.task} {action.outcome}"}]
        return True

    handle = await session.change_careplan(action.patient, change) if careplan else None
    if handle is not None:
        session.reasons.append(f"{action.task} {action.outcome}")

    def finish() -> Mapping[str, Any]:
        if careplan is None:
            return {"careplan": None}
        return {"careplan": f"CarePlan/{careplan['id']}", "changed": handle is not None}

    return finish


@handles(CreateReferral)
async def create_referral(session: Session, action: CreateReferral, stats: WriteStats) -> Finish:
    """A social need's referral ServiceRequest by conditional create on its identifier; the
    unit's Provenance names the need's record."""
    writer = session.writer
    request = build_referral(action, authored_on=writer.clock.now(), requester=writer.agent)
    handle = await session.create_once(request, action.identifier)
    session.entities.append(action.reason)
    session.reasons.append(f"rule {action.rule_id}: referral for {action.need}")

    def finish() -> Mapping[str, Any]:
        ref = handle.reference  # not a Task: the Task counts stay as they are
        if handle.created:
            stats.written.append(ref)
            log.info("referral_written", rule_id=action.rule_id, need=action.need, resource=ref)
        writer.store.audit(
            "create-referral",
            ref,
            {"rule": action.rule_id, "created": handle.created, "identifier": action.identifier},
        )
        return {"service_request": ref, "created": handle.created}

    return finish


def _complete(careplan: dict[str, Any]) -> bool:
    if careplan.get("status") != "active":
        return False  # completed already (or revoked): nothing to do
    careplan["status"] = "completed"
    return True


@handles(CompleteCarePlan)
async def complete_careplan(
    session: Session, action: CompleteCarePlan, stats: WriteStats
) -> Finish:
    """The patient's CarePlan to completed while it is still active (``If-Match``)."""
    found = await session.existing_careplan(action.patient)
    if found is not None and f"CarePlan/{found['id']}" == action.careplan:
        handle = await session.change_careplan(action.patient, _complete)
    else:  # not the engine's CarePlan of the patient as last seen: read the one named
        kind, cid = action.careplan.split("/", 1)
        handle = await session.change(await session.writer.client.read(kind, cid), _complete)
    if handle is not None:
        session.reasons.append(action.reason)

    def finish() -> Mapping[str, Any]:
        if handle is not None:
            stats.updated += 1
            session.writer.store.audit("complete-careplan", action.careplan, {})
            log.info("careplan_completed", resource=action.careplan)
        return {"careplan": action.careplan, "changed": handle is not None}

    return finish


def handler_for(action: Action) -> Handler:
    """The registered handler of an action."""
    for kind, handler in HANDLERS.items():
        if isinstance(action, kind):
            return handler
    raise TypeError(f"no handler for {type(action).__name__}")  # pragma: no cover
