"""Lookups: what planning needs about patients, fetched in batches and cached for the run.

The Patient (birth date, general practitioner), the active CareTeam members and their
roles, the patient's encounters on the server (readmission look-backs that reach before the
journal, and the risk scores' history), and the risk inputs (Conditions, laboratory
Observations, Procedures). :meth:`Lookups.prefetch` fetches them for every patient of a
batch of versions at once: one FHIR ``batch`` Bundle of searches with several patients per
search (``patient=Patient/a,Patient/b``), so a page costs one request, not six per
discharge. A server without ``batch`` gets the same
searches one by one; a search it refuses is retried per patient.

Lookups that fail are logged and treated as absent: a missing care team means the owner
falls back to the next source, never a failed run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import structlog

from fhirbridge.detect import local_reference
from fhirbridge.detect.projection import EncounterView
from fhirbridge.errors import AuthError, FhirError, RateLimited, ServerError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.riskplan import RiskInputs
from fhirbridge.store.base import Store
from fhirbridge.values import Stay

__all__ = ["LAB_CODES", "Lookups", "RiskInputs", "stay_of"]

log = structlog.get_logger(__name__)

#: The laboratory results HOSPITAL reads (hemoglobin, sodium).
LAB_CODES = "http://loinc.org|718-7,http://loinc.org|2951-2,http://loinc.org|2947-0"
#: How many patients one search names (keeps each entry's URL short).
CHUNK = 40
PAGE = 1000

_KINDS = ("Patient", "CareTeam", "Encounter", "Condition", "Observation", "Procedure")
_Params = tuple[tuple[str, str], ...]
_ACTIVE: _Params = (("status", "active"),)
_LABS: _Params = (("code", LAB_CODES),)


@dataclass(frozen=True, slots=True)
class _Search:
    """One search of the batch: ``kind`` for ``patients``, results grouped by patient."""

    kind: str
    patients: tuple[str, ...]
    params: _Params = ()

    def query(self, patients: Sequence[str]) -> dict[str, Any]:
        if self.kind == "Patient":
            ids = ",".join(p.partition("/")[2] for p in patients)
            return {"_id": ids, "_count": PAGE}
        return {"patient": ",".join(patients), **dict(self.params), "_count": PAGE}

    def url(self) -> str:
        from urllib.parse import urlencode

        return f"{self.kind}?{urlencode(self.query(self.patients), safe='/,|:')}"


def _owner(resource: Mapping[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id')}"
    return local_reference(resource.get("subject") or resource.get("patient"))


class Lookups:
    """Cached, batched, failure-tolerant lookups about patients on one server."""

    def __init__(self, client: FhirClient | None, store: Store, *, server: str) -> None:
        self.client = client
        self.store = store
        self.server = server
        self.requests = 0
        self._batches = True
        self._stays: dict[str, list[Stay]] = {}
        self._found: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {} for kind in _KINDS}
        # the journal's Patient snapshots read ahead for the batch being evaluated
        self._ahead: dict[str, Mapping[str, Any] | None] = {}

    @property
    def online(self) -> bool:
        """Whether there is a server to look things up on."""
        return self.client is not None

    def forget(self) -> None:
        """Drop the per-run caches."""
        for found in self._found.values():
            found.clear()
        self._stays.clear()

    def read_ahead(self, patients: Iterable[str]) -> None:
        """Read the journal's snapshots of ``patients`` in one query, for the batch about to
        be evaluated (nothing is journalled until it is; :meth:`forget_read_ahead` after)."""
        wanted = {p.partition("/")[2]: p for p in patients if p.startswith("Patient/")}
        found = self.store.snapshots(self.server, "Patient", wanted)
        self._ahead = {
            ref: (found[pid].resource if pid in found else None) for pid, ref in wanted.items()
        }

    def forget_read_ahead(self) -> None:
        """Drop what :meth:`read_ahead` read (the journal may move on)."""
        self._ahead = {}

    # -- prefetch ----------------------------------------------------------------------
    async def prefetch(
        self, patients: Iterable[str], *, stays: Iterable[str] = (), risk: Iterable[str] = ()
    ) -> None:
        """Patient and care team of ``patients``, the server's encounters of ``stays`` and
        the risk inputs of ``risk``, in one request for all (patients the journal holds are
        not fetched; what is cached is not fetched again)."""
        people = list(dict.fromkeys(patients))
        risky = list(dict.fromkeys(risk))
        await self._fetch(
            [
                ("Patient", (), [p for p in people if self._snapshot(p) is None]),
                ("CareTeam", _ACTIVE, people),
                ("Encounter", (), [*stays, *risky]),
                ("Condition", (), risky),
                ("Observation", _LABS, risky),
                ("Procedure", (), risky),
            ]
        )

    async def _fetch(self, wants: Sequence[tuple[str, _Params, Iterable[str]]]) -> None:
        """Search what is not cached yet, in one request when it is more than one search."""
        if self.client is None:
            return
        searches: list[_Search] = []
        for kind, params, patients in wants:
            known = self._found[kind]
            todo = [
                p for p in dict.fromkeys(patients) if p.startswith("Patient/") and p not in known
            ]
            searches.extend(_Search(kind, tuple(chunk), params) for chunk in _chunks(todo, CHUNK))
        if searches:
            await self._run(searches)

    async def _run(self, searches: Sequence[_Search]) -> None:
        assert self.client is not None
        results: list[list[dict[str, Any]] | None]
        if len(searches) == 1:
            results = [await self._search(searches[0])]
        else:
            results = await self._batch(searches)
        for search, found in zip(searches, results, strict=True):
            if found is None:
                found = await self._one_by_one(search)
            grouped: dict[str, list[dict[str, Any]]] = {p: [] for p in search.patients}
            for resource in found:
                if not isinstance(resource, dict) or resource.get("resourceType") != search.kind:
                    continue  # an OperationOutcome of the search, or an included resource
                owner = _owner(resource)
                if owner in grouped:
                    grouped[owner].append(resource)
            self._found[search.kind].update(grouped)

    async def _batch(self, searches: Sequence[_Search]) -> list[list[dict[str, Any]] | None]:
        """One ``batch`` Bundle of GETs; None for an entry the server refused."""
        assert self.client is not None
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": s.url()}} for s in searches],
        }
        if not self._batches:
            return [await self._search(s) for s in searches]
        self.requests += 1
        try:
            answer = await self.client.transaction(bundle)
        except FhirError as exc:
            if isinstance(exc, ServerError) and not isinstance(exc, RateLimited | AuthError):
                self._batches = False  # the server refuses batches: search one by one
            log.warning("lookup_batch_failed", error=type(exc).__name__)
            return [await self._search(s) for s in searches]
        entries = answer.get("entry")
        entries = entries if isinstance(entries, list) else []
        results: list[list[dict[str, Any]] | None] = []
        for index in range(len(searches)):
            entry = entries[index] if index < len(entries) else None
            response = entry.get("response") if isinstance(entry, dict) else None
            status = str(response.get("status", "")) if isinstance(response, dict) else ""
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if (
                not status.startswith("2")
                or not isinstance(resource, dict)
                or resource.get("resourceType") != "Bundle"
            ):
                results.append(None)  # refused, or an answer we cannot read: ask again
                continue
            results.append(await self._rest_of(resource))
        return results

    async def _rest_of(self, bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The resources of a searchset and of the pages its ``next`` links lead to."""
        assert self.client is not None
        found: list[dict[str, Any]] = []
        page: Mapping[str, Any] | None = bundle
        while page is not None:
            entries = page.get("entry")
            found.extend(
                e["resource"]
                for e in (entries if isinstance(entries, list) else ())
                if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            )
            links = page.get("link") or ()
            nxt = next((x.get("url") for x in links if x.get("relation") == "next"), None)
            if not nxt or not self.client.owns(self.client.url(nxt)):
                return found
            self.requests += 1
            page = await self.client.get(nxt)
        return found

    async def _search(self, search: _Search) -> list[dict[str, Any]] | None:
        """One search by GET, every page; None when the server refuses it."""
        assert self.client is not None
        found: list[dict[str, Any]] = []
        pages = 0
        try:
            async for page in self.client.pages(search.kind, search.query(search.patients)):
                pages += 1
                found.extend(page.resources)
        except FhirError as exc:
            log.warning("lookup_failed", resource_type=search.kind, error=type(exc).__name__)
            self.requests += pages + 1
            return None
        self.requests += pages
        return found

    async def _one_by_one(self, search: _Search) -> list[dict[str, Any]]:
        """A refused search again, one patient at a time (a server that takes one value);
        what still fails is absent."""
        found: list[dict[str, Any]] = []
        if len(search.patients) == 1:
            return found
        for patient in search.patients:
            found.extend(await self._search(_Search(search.kind, (patient,), search.params)) or ())
        return found

    # -- answers -----------------------------------------------------------------------
    def _snapshot(self, reference: str) -> Mapping[str, Any] | None:
        if reference in self._ahead:
            return self._ahead[reference]
        kind, _, pid = reference.partition("/")
        snapshot = self.store.snapshot(self.server, kind, pid)
        return snapshot.resource if snapshot is not None else None

    async def _of(self, kind: str, patient: str, params: _Params = ()) -> list[dict[str, Any]]:
        if patient not in self._found[kind]:
            await self._fetch([(kind, params, [patient])])
        return self._found[kind].get(patient, [])

    async def patient(self, reference: str) -> Mapping[str, Any] | None:
        """The Patient: its journalled snapshot, else from the server."""
        snapshot = self._snapshot(reference)
        if snapshot is not None:
            return snapshot
        found = await self._of("Patient", reference)
        return found[0] if found else None

    async def care_team(self, patient: str) -> list[tuple[str, str]]:
        """``(role code, member)`` of the patient's active CareTeams."""
        members: list[tuple[str, str]] = []
        for team in await self._of("CareTeam", patient, _ACTIVE):
            # servers that ignore unknown search parameters return every team
            if team.get("status") != "active" or local_reference(team.get("subject")) != patient:
                continue
            for participant in team.get("participant") or ():
                member = local_reference(participant.get("member"))
                for role in participant.get("role") or ():
                    for coding in role.get("coding") or ():
                        if member and coding.get("code"):
                            members.append((str(coding["code"]), member))
        return members

    async def stays(self, view: EncounterView) -> list[Stay]:
        """The patient's encounters on the server, for a journal that does not reach back
        far enough."""
        if self.client is None or view.patient is None or view.start is None:
            return []
        found = self._stays.get(view.patient)
        if found is None:
            found = self._stays[view.patient] = [
                stay
                for encounter in await self._of("Encounter", view.patient)
                if (stay := self._stay(encounter)) is not None
            ]
        return found

    def _stay(self, encounter: Mapping[str, Any]) -> Stay | None:
        try:
            other = EncounterView.of(encounter)
            for instant in (other.start, other.end):
                if instant is not None:
                    instant.astimezone(UTC)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            # one unusable stay on the server must not stop the patient's look-backs
            reference = f"Encounter/{encounter.get('id')}"
            log.warning("stay_unusable", resource=reference, error=type(exc).__name__)
            return None
        return stay_of(other, self.server)

    async def risk_inputs(self, patient: str) -> RiskInputs:
        """The patient's Conditions, Encounters, laboratory Observations and Procedures."""
        return {
            "conditions": await self._of("Condition", patient),
            "encounters": await self._of("Encounter", patient),
            "observations": await self._of("Observation", patient, _LABS),
            "procedures": await self._of("Procedure", patient),
        }


def stay_of(view: EncounterView, server: str) -> Stay:
    """The stay an Encounter projection describes."""
    return Stay(
        server=server,
        encounter=view.reference,
        patient=view.patient or "",
        encounter_class=view.class_code,
        status=view.status,
        start=view.start,
        end=view.end,
    )


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
