"""The two ways a write unit reaches the server, behind one interface.

An action handler (:mod:`fhirbridge.writeback.actions`) says *what* to write through a
:class:`Session`: create once on an identifier, change a resource with ``If-Match``, add an
activity to the patient's CarePlan. :class:`TransactionSession` stages it all in one FHIR
``transaction`` Bundle (conditional entries, ``urn:uuid`` references, one Provenance) sent by
:meth:`Session.finish`; :class:`EachSession` performs each write at once and records the
unit's Provenance at the end. A :class:`Handle` is what a write became (its reference, and
after ``finish`` its id, version and whether it was created).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from fhirbridge.errors import MultipleMatches, ResourceNotFound
from fhirbridge.fhir.client import WriteResult, etag_version
from fhirbridge.identity import UNIT_TAG_SYSTEM, careplan_identifier, identifier_query
from fhirbridge.identity import identifier_token as token
from fhirbridge.values import IDENTIFIER_SYSTEM
from fhirbridge.writeback.build import build_careplan, build_provenance
from fhirbridge.writeback.units import WriteUnit
from fhirbridge.writeback.versioned import Change, versioned_update

if TYPE_CHECKING:
    from fhirbridge.writeback.writer import Writer

__all__ = ["EachSession", "Handle", "Session", "TransactionSession", "activity_for"]


@dataclass(slots=True)
class Handle:
    """One resource a unit writes: ``ref`` is what other resources of the unit reference it
    by (``urn:uuid:...`` inside a transaction until it is sent)."""

    resource_type: str
    ref: str
    status: int = 0
    id: str | None = None
    version: str | None = None
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def created(self) -> bool:
        """Whether the server made it new (a conditional create that found it is not)."""
        return self.status == 201

    @property
    def reference(self) -> str:
        """``Type/id`` once known (the staging reference before)."""
        return f"{self.resource_type}/{self.id}" if self.id else self.ref

    def take(self, result: WriteResult) -> Handle:
        """Fill in what a per-resource write returned."""
        self.status = result.status
        self.id = result.id
        self.version = result.version_id
        self.resource = result.resource
        self.ref = self.reference
        return self


def activity_for(task_ref: str, identifier: str) -> dict[str, Any]:
    """A CarePlan activity naming a Task by reference and by its engine identifier (the
    identifier lets a replayed unit see the activity is already there)."""
    return {
        "reference": {
            "reference": task_ref,
            "identifier": {"system": IDENTIFIER_SYSTEM, "value": identifier},
        }
    }


def _has_activity(careplan: Mapping[str, Any], task_ref: str, identifier: str) -> bool:
    for activity in careplan.get("activity") or ():
        reference = activity.get("reference") or {}
        if reference.get("reference") == task_ref:
            return True
        if (reference.get("identifier") or {}).get("value") == identifier:
            return True
    return False


def _add_activity(task_ref: str, identifier: str) -> Change:
    def change(careplan: dict[str, Any]) -> bool:
        if _has_activity(careplan, task_ref, identifier):
            return False
        careplan.setdefault("activity", []).append(activity_for(task_ref, identifier))
        if careplan.get("status") == "completed":
            careplan["status"] = "active"  # new work reopens a completed plan
        return True

    return change


class Session(Protocol):
    """What an action handler writes through (a transaction or one request per resource)."""

    writer: Writer
    unit: WriteUnit
    reasons: list[str]
    entities: list[str]

    async def careplan(self, patient: str) -> Handle:
        """The patient's transitional-care CarePlan (created once, if it is not there)."""

    async def existing_careplan(self, patient: str) -> dict[str, Any] | None:
        """The patient's CarePlan as last seen, or None if there is none."""

    async def add_activity(self, patient: str, task: Handle, identifier: str) -> None:
        """Make the patient's CarePlan name ``task`` (once)."""

    async def change_careplan(self, patient: str, change: Change) -> Handle | None:
        """Apply ``change`` to the patient's CarePlan, if it has one and ``change`` changes it."""

    async def create_once(
        self, resource: dict[str, Any], identifier: str, *, by_identifier: bool = True
    ) -> Handle:
        """Create ``resource`` unless the one with ``identifier`` exists (by conditional
        create, or ``by_identifier`` False: a PUT of the identifier as id)."""

    async def change(self, resource: dict[str, Any], change: Change) -> Handle | None:
        """Write ``change`` of ``resource`` with ``If-Match``; None when nothing changes."""

    async def finish(self) -> None:
        """Send what was staged (a transaction) and record the unit's Provenance."""


class _Base:
    def __init__(self, writer: Writer, unit: WriteUnit) -> None:
        self.writer = writer
        self.unit = unit
        self.reasons: list[str] = []
        #: what the writes were derived from, beside the transition's focus (Provenance)
        self.entities: list[str] = []
        self.handles: list[Handle] = []
        self.creating = False

    def _entities(self) -> list[str]:
        transition = self.unit.transition
        focus = transition.get("focus")
        version = transition.get("focus_version")
        found: list[str] = []
        if focus:
            # the journal's own version keys (h:..., v2:...) name no version on the server
            found.append(
                f"{focus}/_history/{version}" if version and ":" not in str(version) else focus
            )
        found.extend(e for e in self.entities if e not in found and e != focus)
        return [str(e) for e in found]

    def provenance(self, targets: list[str]) -> dict[str, Any]:
        """The one Provenance of this unit, naming every resource it wrote."""
        return build_provenance(
            targets,
            recorded=self.writer.clock.now(),
            agent=self.writer.agent,
            entities=self._entities(),
            activity="CREATE" if self.creating else "UPDATE",
            reason="; ".join(dict.fromkeys(self.reasons)) or None,
            unit=self.unit.tag,
        )

    async def _find_careplan(self, patient: str) -> dict[str, Any] | None:
        cached = self.writer.careplans.get(patient)
        if cached is not None:
            return copy.deepcopy(cached)
        identifier = careplan_identifier(patient)
        found = await self.writer.client.search_all("CarePlan", {"identifier": token(identifier)})
        active = [c for c in found if c.get("status") != "entered-in-error"]
        if len(active) > 1:
            # two writers created it at once: keep the oldest, move the activities over
            await self.writer.healer.heal("CarePlan", identifier)
            found = await self.writer.client.search_all(
                "CarePlan", {"identifier": token(identifier)}
            )
            active = [c for c in found if c.get("status") != "entered-in-error"]
        if not active:
            return None
        self.writer.careplans[patient] = active[0]
        return copy.deepcopy(active[0])

    async def existing_careplan(self, patient: str) -> dict[str, Any] | None:
        """The patient's CarePlan as last seen (cached for the run), or None."""
        return await self._find_careplan(patient)


class EachSession(_Base):
    """One request per write, in order; the CarePlan activities and the Provenance last."""

    def __init__(self, writer: Writer, unit: WriteUnit) -> None:
        super().__init__(writer, unit)
        self._activities: dict[str, list[tuple[str, str]]] = {}

    async def careplan(self, patient: str) -> Handle:
        """The CarePlan, by conditional create when the engine has not seen one."""
        found = await self._find_careplan(patient)
        if found is None:
            careplan = build_careplan(patient, created=self.writer.clock.now())
            self.creating = True
            written = await self._conditional(careplan, careplan_identifier(patient))
            found = written.resource
            if not found.get("id"):
                found = await self._find_careplan(patient)
                if found is None:
                    raise ResourceNotFound("the CarePlan just written cannot be found", status=404)
            self.writer.careplans[patient] = found
            handle = Handle("CarePlan", "").take(written)
        else:
            handle = Handle("CarePlan", f"CarePlan/{found['id']}", 200, str(found["id"]))
        handle.resource = found
        self._track(handle)
        return handle

    def _track(self, handle: Handle) -> None:
        if all(h.reference != handle.reference for h in self.handles):
            self.handles.append(handle)

    async def _conditional(self, resource: dict[str, Any], identifier: str) -> WriteResult:
        query = identifier_query(identifier)
        try:
            return await self.writer.client.create(resource, if_none_exist=query)
        except MultipleMatches:
            # racing writers made it twice: heal, then the create finds the survivor
            await self.writer.healer.heal(resource["resourceType"], identifier)
            return await self.writer.client.create(resource, if_none_exist=query)

    async def add_activity(self, patient: str, task: Handle, identifier: str) -> None:
        """Note the activity; :meth:`finish` adds all of the unit's in one versioned update."""
        await self.careplan(patient)
        self._activities.setdefault(patient, []).append((task.reference, identifier))

    async def _add_activities(self) -> None:
        for patient, wanted in self._activities.items():
            found = await self._find_careplan(patient)
            if found is None:  # pragma: no cover - careplan() made it
                continue

            def change(careplan: dict[str, Any], wanted: Any = wanted) -> bool:
                changes = [_add_activity(ref, identifier)(careplan) for ref, identifier in wanted]
                return any(changes)

            _, current = await versioned_update(self.writer.client, found, change)
            self.writer.careplans[patient] = current
        self._activities.clear()

    async def change_careplan(self, patient: str, change: Change) -> Handle | None:
        """Change the CarePlan now, by versioned update."""
        found = await self._find_careplan(patient)
        if found is None:
            return None
        written, current = await versioned_update(self.writer.client, found, change)
        self.writer.careplans[patient] = current
        if written is None:
            return None
        handle = Handle("CarePlan", f"CarePlan/{found['id']}").take(written)
        self._track(handle)
        return handle

    async def create_once(
        self, resource: dict[str, Any], identifier: str, *, by_identifier: bool = True
    ) -> Handle:
        """Conditional create now (or read, then PUT of the identifier as id)."""
        kind = resource["resourceType"]
        client = self.writer.client
        self.creating = True
        if by_identifier:
            written = await self._conditional(resource, identifier)
            if not written.id:
                found = await client.search_all(kind, {"identifier": token(identifier)})
                if not found:
                    raise ResourceNotFound(f"the {kind} just written cannot be found", status=404)
                written = WriteResult(written.status, found[0], None, written.version_id)
        else:
            try:
                existing = await client.read(kind, identifier)
            except ResourceNotFound:
                written = await client.update({**resource, "id": identifier})
            else:
                version = (existing.get("meta") or {}).get("versionId")
                written = WriteResult(200, existing, None, str(version) if version else None)
        handle = Handle(kind, "").take(written)
        self._track(handle)
        return handle

    async def change(self, resource: dict[str, Any], change: Change) -> Handle | None:
        """Versioned update now."""
        written, _ = await versioned_update(self.writer.client, resource, change)
        if written is None:
            return None
        handle = Handle(resource["resourceType"], "").take(written)
        if not handle.id:
            handle.id = str(resource["id"])
        self._track(handle)
        return handle

    async def finish(self) -> None:
        """The CarePlan activities of the unit (one update), then its Provenance, once
        (conditional create on the unit's tag)."""
        await self._add_activities()
        targets = [h.reference for h in self.handles]
        if not targets:
            return
        await self.writer.client.create(
            self.provenance(targets), if_none_exist=f"_tag={UNIT_TAG_SYSTEM}|{self.unit.tag}"
        )


@dataclass(slots=True)
class _StagedCarePlan:
    handle: Handle
    body: dict[str, Any]
    new: bool
    changed: bool = False
    activities: list[tuple[Handle, str]] = field(default_factory=list)


def _location(location: str | None) -> tuple[str | None, str | None, str | None]:
    """``(type, id, version)`` from an entry's ``response.location``."""
    if not location:
        return None, None, None
    parts = [p for p in urlsplit(location).path.split("/") if p]
    version = None
    if "_history" in parts:
        at = parts.index("_history")
        version = parts[at + 1] if at + 1 < len(parts) else None
        parts = parts[:at]
    if len(parts) < 2:
        return None, None, version
    return parts[-2], parts[-1], version


class TransactionSession(_Base):
    """Stages the unit in one transaction Bundle; :meth:`finish` sends it."""

    def __init__(self, writer: Writer, unit: WriteUnit) -> None:
        super().__init__(writer, unit)
        self.entries: list[tuple[dict[str, Any], Handle]] = []
        self.careplans: dict[str, _StagedCarePlan] = {}
        self.puts: dict[str, tuple[dict[str, Any], Handle]] = {}

    def _stage(self, resource: dict[str, Any], request: dict[str, str]) -> Handle:
        kind = resource["resourceType"]
        # a create: a POST, or a PUT of an id the engine chose (no If-Match)
        self.creating |= request["method"] == "POST" or "ifMatch" not in request
        if request["method"] == "POST":
            handle = Handle(kind, f"urn:uuid:{uuid.uuid4()}")
        else:
            handle = Handle(kind, request["url"].split("?", 1)[0], id=resource.get("id"))
        entry = {"fullUrl": handle.ref, "resource": resource, "request": request}
        if request["method"] != "POST":
            entry.pop("fullUrl")
        self.entries.append((entry, handle))
        self.handles.append(handle)
        return handle

    async def _staged_careplan(self, patient: str) -> _StagedCarePlan | None:
        staged = self.careplans.get(patient)
        if staged is not None:
            return staged
        found = await self._find_careplan(patient)
        if found is None:
            return None
        handle = Handle("CarePlan", f"CarePlan/{found['id']}", id=str(found["id"]))
        staged = self.careplans[patient] = _StagedCarePlan(handle, found, new=False)
        return staged

    async def careplan(self, patient: str) -> Handle:
        """The CarePlan: the one last seen, or a conditional create in this transaction."""
        staged = await self._staged_careplan(patient)
        if staged is None:
            body = build_careplan(patient, created=self.writer.clock.now())
            request = {
                "method": "POST",
                "url": "CarePlan",
                "ifNoneExist": identifier_query(careplan_identifier(patient)),
            }
            staged = _StagedCarePlan(self._stage(body, request), body, new=True)
            self.careplans[patient] = staged
        return staged.handle

    async def add_activity(self, patient: str, task: Handle, identifier: str) -> None:
        """Name the Task in the CarePlan (the staged body; sent with the unit)."""
        await self.careplan(patient)
        staged = self.careplans[patient]
        staged.activities.append((task, identifier))
        staged.changed |= _add_activity(task.ref, identifier)(staged.body)

    async def change_careplan(self, patient: str, change: Change) -> Handle | None:
        """Change the staged CarePlan body."""
        staged = await self._staged_careplan(patient)
        if staged is None or not change(staged.body):
            return None
        staged.changed = True
        return staged.handle

    async def create_once(
        self, resource: dict[str, Any], identifier: str, *, by_identifier: bool = True
    ) -> Handle:
        """A conditional-create entry (or a PUT of the identifier as id)."""
        kind = resource["resourceType"]
        if by_identifier:
            request = {"method": "POST", "url": kind, "ifNoneExist": identifier_query(identifier)}
            return self._stage(resource, request)
        return self._stage(
            {**resource, "id": identifier}, {"method": "PUT", "url": f"{kind}/{identifier}"}
        )

    async def change(self, resource: dict[str, Any], change: Change) -> Handle | None:
        """A PUT entry with ``ifMatch`` on the version read (one per resource per unit)."""
        ref = f"{resource['resourceType']}/{resource['id']}"
        if ref in self.puts:
            body, handle = self.puts[ref]
            return handle if change(body) else None
        body = copy.deepcopy(resource)
        if not change(body):
            return None
        version = str((resource.get("meta") or {}).get("versionId") or "")
        request = {"method": "PUT", "url": ref, "ifMatch": f'W/"{version}"'}
        handle = self._stage(body, request)
        self.puts[ref] = (body, handle)
        return handle

    def bundle(self) -> dict[str, Any]:
        """The transaction Bundle: staged entries, changed CarePlans, one Provenance."""
        for staged in self.careplans.values():
            if staged.new or not staged.changed:
                continue
            version = str((staged.body.get("meta") or {}).get("versionId") or "")
            request = {"method": "PUT", "url": staged.handle.ref, "ifMatch": f'W/"{version}"'}
            self.entries.append(({"resource": staged.body, "request": request}, staged.handle))
            self.handles.append(staged.handle)
        entries = [entry for entry, _ in self.entries]
        targets = list(dict.fromkeys(h.ref for h in self.handles))
        if targets:
            provenance = self.provenance(targets)
            query = f"_tag={UNIT_TAG_SYSTEM}|{self.unit.tag}"
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": provenance,
                    "request": {"method": "POST", "url": "Provenance", "ifNoneExist": query},
                }
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    async def finish(self) -> None:
        """Send the transaction and resolve every handle from the response."""
        bundle = self.bundle()
        if not bundle["entry"]:
            return
        response = await self.writer.client.transaction(bundle)
        answers = response.get("entry") or []
        for (_, handle), answer in zip(self.entries, answers, strict=False):
            _resolve(handle, answer)
        await self._after(self.writer)

    async def _after(self, writer: Writer) -> None:
        for patient, staged in self.careplans.items():
            if not staged.new and not staged.changed:
                continue  # not sent: the CarePlan last seen is still current
            careplan = staged.handle.resource
            if staged.new and not staged.handle.created and careplan.get("id"):
                # another writer made the CarePlan first: it lacks this unit's activities
                for task, identifier in staged.activities:
                    careplan = (
                        await versioned_update(
                            writer.client, careplan, _add_activity(task.reference, identifier)
                        )
                    )[1]
            if careplan.get("id") and (careplan.get("meta") or {}).get("versionId"):
                writer.careplans[patient] = careplan
            else:
                writer.careplans.pop(patient, None)


def _resolve(handle: Handle, answer: Mapping[str, Any]) -> None:
    response = answer.get("response") or {}
    status_text = str(response.get("status") or "")
    handle.status = int(status_text.split()[0]) if status_text[:3].isdigit() else 0
    rtype, rid, version = _location(response.get("location"))
    resource = answer.get("resource")
    if isinstance(resource, dict):
        handle.resource = resource
        rid = rid or resource.get("id")
        version = version or (resource.get("meta") or {}).get("versionId")
    handle.id = str(rid) if rid else handle.id
    handle.version = etag_version(response.get("etag")) or (str(version) if version else None)
    if rtype:
        handle.resource_type = rtype
    handle.ref = handle.reference


Finish = Callable[[], Mapping[str, Any]]
