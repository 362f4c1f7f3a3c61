"""Perform the outbox: write Tasks, CarePlan activities and Provenance, exactly once.

Every write is idempotent on the server: Tasks and the CarePlan use conditional create on
the engine's deterministic identifier; CarePlan activities and Task status changes use
``If-Match`` and re-read-and-reapply on a version conflict; Provenance uses conditional
create on its target. So an item performed twice (a crash after the write, before the
outbox noted it) changes nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.riskassessment import RiskAssessment
from pydantic import ValidationError

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
from fhirbridge.fhir.client import FhirClient, WriteResult
from fhirbridge.store.base import OutboxItem, Store
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    CancelTasks,
    CloseActivity,
    CompleteCarePlan,
    CompleteTasks,
    CreateReferral,
    CreateTask,
    RecordRisk,
)
from fhirbridge.writeback.build import (
    build_careplan,
    build_provenance,
    build_task,
    careplan_identifier,
    identifier_query,
)
from fhirbridge.writeback.casework import complete_careplan, write_referral
from fhirbridge.writeback.outbox import action_from_payload

__all__ = ["OBSERVATION_PLACEHOLDER", "OPEN_TASK_STATUSES", "WriteStats", "Writer"]

#: Stands for the score Observation in a planned RiskAssessment until it has an id.
OBSERVATION_PLACEHOLDER = "urn:fhirbridge:score-observation"


def _versioned(reference: str | None, version: str | None) -> str | None:
    """``Type/id/_history/vid`` when ``vid`` is a server's version id; the bare reference for
    the journal's own version keys (content hashes ``h:...``, HL7 v2 messages ``v2:...``),
    which name no version on the server."""
    if reference and version and ":" not in version:
        return f"{reference}/_history/{version}"
    return reference


def _validate_as(resource: Mapping[str, Any]) -> None:
    model = Observation if resource.get("resourceType") == "Observation" else RiskAssessment
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise ProfileError(f"{resource.get('resourceType')} is not valid FHIR: {exc}") from exc


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
CONFLICT_RETRIES = 5


@dataclass(slots=True)
class WriteStats:
    """What one drain of the outbox did."""

    created: int = 0
    existing: int = 0
    updated: int = 0
    dead: int = 0
    written: list[str] = field(default_factory=list)


class Writer:
    """Performs outbox items against one FHIR server."""

    def __init__(
        self,
        client: FhirClient,
        store: Store,
        *,
        clock: Clock | None = None,
        agent: str = "Device/fhirbridge",
        codes: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock or SystemClock()
        self.agent = agent
        self.codes = dict(codes or {})
        self._identifier_search: dict[str, bool] = {}

    async def drain(self, *, batch: int = 50) -> WriteStats:
        """Perform every pending item. A failure a retry may fix (transport, 5xx, 429 after
        the client's retries) stops the drain and propagates, leaving the item pending."""
        stats = WriteStats()
        while True:
            items = self.store.claim_outbox(batch)
            if not items:
                return stats
            for item in items:
                await self.perform(item, stats)

    async def perform(self, item: OutboxItem, stats: WriteStats | None = None) -> None:
        """Perform one item and record the outcome in the store."""
        stats = stats if stats is not None else WriteStats()
        try:
            action = action_from_payload(item.kind, item.payload)
            transition = item.payload.get("transition", {})
            if isinstance(action, CreateTask):
                result = await self._create_task(action, transition, stats)
            elif isinstance(action, CancelTasks):
                query = {"patient": action.patient}
                if action.focus:
                    query["focus"] = action.focus
                result = await self._set_status(
                    await self._engine_tasks(query, encounter=action.encounter),
                    action.status,
                    action.reason,
                    stats,
                )
            elif isinstance(action, CompleteTasks):
                query = {"focus": action.focus}
                if action.code:  # only Tasks of one engine code (e.g. coverage-review)
                    query["code"] = f"{TASK_CODE_SYSTEM}|{action.code}"
                tasks = [
                    t
                    for t in await self._engine_tasks(query)
                    if not action.code
                    or any(
                        c.get("code") == action.code
                        for c in (t.get("code") or {}).get("coding") or ()
                    )
                ]
                result = await self._set_status(tasks, "completed", action.reason, stats)
            elif isinstance(action, RecordRisk):
                result = await self._record_risk(action, transition, stats)
            elif isinstance(action, CloseActivity):
                result = await self._close_activity(action)
            # -- case management (fhirbridge.writeback.casework) --
            elif isinstance(action, CreateReferral):
                result = await write_referral(
                    self.client,
                    action,
                    now=self.clock.now(),
                    requester=self.agent,
                    provenance=self._provenance,
                )
            elif isinstance(action, CompleteCarePlan):
                result = await complete_careplan(self.client, action, provenance=self._provenance)
            else:  # pragma: no cover - the outbox only holds the kinds above
                raise TypeError(item.kind)
        except (InvalidResource, MultipleMatches, ProfileError, ResourceNotFound) as exc:
            stats.dead += 1
            self.store.fail_outbox(item.id, str(exc), dead=True)
            log.warning(
                "write_dead_lettered", kind=item.kind, key=item.key, error=type(exc).__name__
            )
            return
        except ServerError as exc:
            if 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 409, 412, 429):
                stats.dead += 1
                self.store.fail_outbox(item.id, str(exc), dead=True)
                return
            self.store.fail_outbox(item.id, str(exc), dead=False)
            raise
        except FhirBridgeError as exc:
            self.store.fail_outbox(item.id, str(exc), dead=False)
            raise
        self.store.finish_outbox(item.id, result)

    # -- create a Task ---------------------------------------------------------------------
    async def _careplan(self, patient: str) -> dict[str, Any]:
        identifier = careplan_identifier(patient)
        careplan = build_careplan(patient, created=self.clock.now())
        written = await self.client.create(careplan, if_none_exist=identifier_query(identifier))
        if written.resource.get("id"):
            return written.resource
        found = await self.client.search_all(
            "CarePlan", {"identifier": f"{IDENTIFIER_SYSTEM}|{identifier}"}
        )
        if not found:
            raise ResourceNotFound("the CarePlan just written cannot be found", status=404)
        return found[0]

    async def _create_task(
        self, action: CreateTask, transition: Mapping[str, Any], stats: WriteStats
    ) -> dict[str, Any]:
        careplan_ref: str | None = None
        if action.add_to_careplan:
            careplan = await self._careplan(action.patient)
            careplan_ref = f"CarePlan/{careplan['id']}"
        task = build_task(
            action,
            authored_on=self.clock.now(),
            requester=self.agent,
            careplan=careplan_ref,
            codes=self.codes,
        )
        written = await self.client.create(task, if_none_exist=identifier_query(action.identifier))
        task_id = written.id
        if not task_id:
            found = await self.client.search_all(
                "Task", {"identifier": f"{IDENTIFIER_SYSTEM}|{action.identifier}"}
            )
            task_id = found[0]["id"] if found else None
        if not task_id:
            raise ResourceNotFound("the Task just written cannot be found", status=404)
        task_ref = f"Task/{task_id}"
        if written.created:
            stats.created += 1
            stats.written.append(task_ref)
            log.info("task_written", rule_id=action.rule_id, code=action.code, resource=task_ref)
        else:
            stats.existing += 1
        if careplan_ref:
            await self._add_activity(careplan_ref, task_ref)
        version = written.version_id or "1"
        entity = transition.get("focus")
        entity = _versioned(entity, transition.get("focus_version"))
        await self._provenance(
            f"{task_ref}/_history/{version}",
            [e for e in (entity,) if e],
            "CREATE",
            f"rule {action.rule_id} on {transition.get('kind', 'transition')}",
        )
        self.store.audit(
            "create-task",
            task_ref,
            {"rule": action.rule_id, "created": written.created, "identifier": action.identifier},
        )
        return {"task": task_ref, "created": written.created, "careplan": careplan_ref}

    async def _add_activity(self, careplan_ref: str, task_ref: str) -> None:
        kind, cid = careplan_ref.split("/", 1)
        for _ in range(CONFLICT_RETRIES):
            careplan = await self.client.read(kind, cid)
            activities = careplan.setdefault("activity", [])
            if any((a.get("reference") or {}).get("reference") == task_ref for a in activities):
                return
            activities.append({"reference": {"reference": task_ref}})
            if careplan.get("status") == "completed":
                careplan["status"] = "active"  # new work reopens a completed plan
            try:
                await self.client.update(careplan, if_match=careplan["meta"]["versionId"])
                return
            except VersionConflict:
                continue
        raise VersionConflict(
            f"{careplan_ref} kept changing under us ({CONFLICT_RETRIES} tries)", status=412
        )

    async def _provenance(
        self, target: str, entities: list[str], activity: str, reason: str
    ) -> None:
        provenance = build_provenance(
            target,
            recorded=self.clock.now(),
            agent=self.agent,
            entities=entities,
            activity=activity,
            reason=reason,
        )
        await self.client.create(provenance, if_none_exist=f"target={target}")

    # -- risk scores -----------------------------------------------------------------------
    async def _record_risk(
        self, action: RecordRisk, transition: Mapping[str, Any], stats: WriteStats
    ) -> dict[str, Any]:
        observation = dict(action.observation)
        _validate_as(observation)
        written = await self._create_once(observation, f"{action.identifier}-observation")
        observation_ref = f"Observation/{written.id}"
        assessment = json.loads(
            json.dumps(action.risk_assessment).replace(OBSERVATION_PLACEHOLDER, observation_ref)
        )
        _validate_as(assessment)
        assessed = await self._create_once(assessment, action.identifier)
        entity = transition.get("focus")
        entity = _versioned(entity, transition.get("focus_version"))
        for result, ref in (
            (written, observation_ref),
            (assessed, f"RiskAssessment/{assessed.id}"),
        ):
            target = f"{ref}/_history/{result.version_id}" if result.version_id else ref
            await self._provenance(
                target, [e for e in (entity,) if e], "CREATE", f"{action.score} score"
            )
        if assessed.created:
            stats.written.append(f"RiskAssessment/{assessed.id}")
        self.store.audit(
            "record-risk",
            f"RiskAssessment/{assessed.id}",
            {"score": action.score, "total": action.total, "tier": action.tier},
        )
        log.info("risk_written", score=action.score, tier=action.tier, resource=observation_ref)
        return {"observation": observation_ref, "risk_assessment": f"RiskAssessment/{assessed.id}"}

    async def _create_once(self, resource: dict[str, Any], identifier: str) -> WriteResult:
        """Create ``resource`` unless it exists: by conditional create on its identifier where
        the server can search that type by identifier, else by a read-then-PUT of the
        deterministic id (``updateCreate``)."""
        kind = resource["resourceType"]
        if await self._searchable_by_identifier(kind):
            return await self.client.create(resource, if_none_exist=identifier_query(identifier))
        try:
            existing = await self.client.read(kind, identifier)
        except ResourceNotFound:
            return await self.client.update({**resource, "id": identifier})
        version = (existing.get("meta") or {}).get("versionId")
        return WriteResult(200, existing, None, str(version) if version else None)

    async def _searchable_by_identifier(self, kind: str) -> bool:
        if kind not in self._identifier_search:
            statement = await self.client.capabilities()
            listed = {
                str(r.get("type")): {str(p.get("name")) for p in r.get("searchParam") or ()}
                for rest in statement.get("rest") or ()
                for r in rest.get("resource") or ()
            }
            self._identifier_search[kind] = "identifier" in listed.get(kind, set())
        return self._identifier_search[kind]

    # -- CarePlan activity ------------------------------------------------------------------
    async def _close_activity(self, action: CloseActivity) -> dict[str, Any]:
        found = await self.client.search_all(
            "CarePlan",
            {"identifier": f"{IDENTIFIER_SYSTEM}|{careplan_identifier(action.patient)}"},
        )
        if not found:
            return {"careplan": None}
        careplan = found[0]
        for _ in range(CONFLICT_RETRIES):
            activities = careplan.get("activity") or []
            match = [
                a for a in activities if (a.get("reference") or {}).get("reference") == action.task
            ]
            if not match or match[0].get("outcomeCodeableConcept"):
                return {"careplan": f"CarePlan/{careplan['id']}", "changed": False}
            match[0]["outcomeCodeableConcept"] = [{"text": action.outcome}]
            match[0]["progress"] = [
                {"time": self.clock.now().isoformat(), "text": f"{action.task} {action.outcome}"}
            ]
            try:
                await self.client.update(careplan, if_match=careplan["meta"]["versionId"])
            except VersionConflict:
                careplan = await self.client.read("CarePlan", careplan["id"])
                continue
            return {"careplan": f"CarePlan/{careplan['id']}", "changed": True}
        raise VersionConflict("the CarePlan kept changing under us", status=412)

    # -- change Task status ----------------------------------------------------------------
    async def _engine_tasks(
        self, params: Mapping[str, str], *, encounter: str | None = None
    ) -> list[dict[str, Any]]:
        query = {**params, "_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"}
        tasks = await self.client.search_all("Task", query)
        return [
            t
            for t in tasks
            if t.get("status") in OPEN_TASK_STATUSES
            and (encounter is None or (t.get("encounter") or {}).get("reference") == encounter)
        ]

    async def _set_status(
        self, tasks: list[dict[str, Any]], status: str, reason: str, stats: WriteStats
    ) -> dict[str, Any]:
        changed: list[str] = []
        for task in tasks:
            ref = f"Task/{task['id']}"
            for _ in range(CONFLICT_RETRIES):
                if task.get("status") not in OPEN_TASK_STATUSES:
                    break
                task["status"] = status
                task["statusReason"] = {"text": reason}
                task["lastModified"] = self.clock.now().isoformat()
                try:
                    written = await self.client.update(task, if_match=task["meta"]["versionId"])
                except VersionConflict:
                    task = await self.client.read("Task", task["id"])
                    continue
                changed.append(ref)
                stats.updated += 1
                await self._provenance(
                    f"{ref}/_history/{written.version_id}" if written.version_id else ref,
                    [],
                    "UPDATE",
                    reason,
                )
                self.store.audit(f"task-{status}", ref, {"reason": reason})
                log.info("task_status_changed", resource=ref, status=status)
                break
        return {"tasks": changed, "status": status}
