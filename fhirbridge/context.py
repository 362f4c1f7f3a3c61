"""What rules need to know about a patient, looked up on demand and cached per run.

The Patient (birth date, general practitioner), the active CareTeam members and their
roles, and the patient's earlier encounters on the server (for readmission look-backs that
reach before the journal). Lookups that fail are logged and treated as absent: a missing
care team means the owner falls back to the next source, never a failed run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog

from fhirbridge.detect import local_reference
from fhirbridge.detect.projection import EncounterView
from fhirbridge.errors import FhirError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.store.base import Stay, Store

__all__ = ["PatientContext"]

log = structlog.get_logger(__name__)


class PatientContext:
    """Cached, failure-tolerant lookups about patients on one server."""

    def __init__(
        self,
        client: FhirClient | None,
        store: Store,
        *,
        server: str,
        readmission_window_days: int = 30,
    ) -> None:
        self.client = client
        self.store = store
        self.server = server
        self.readmission_window_days = readmission_window_days
        self._patients: dict[str, Mapping[str, Any] | None] = {}
        self._care_teams: dict[str, list[tuple[str, str]]] = {}
        self._server_stays: dict[str, list[Stay]] = {}

    async def stays_from_server(self, view: EncounterView) -> list[Stay]:
        """The patient's earlier encounters from the server, for a journal that does not
        reach back far enough (once per patient per engine)."""
        if self.client is None or view.patient is None or view.start is None:
            return []
        if view.patient in self._server_stays:
            return self._server_stays[view.patient]
        window = timedelta(days=self.readmission_window_days + 2)
        since = (view.start - window).date().isoformat()
        found: list[Stay] = []
        try:
            async for enc in self.client.search(
                "Encounter", {"patient": view.patient, "date": f"ge{since}", "_count": 100}
            ):
                other = EncounterView.of(enc)
                found.append(
                    Stay(
                        server=self.server,
                        encounter=other.reference,
                        patient=other.patient or "",
                        encounter_class=other.class_code,
                        status=other.status,
                        start=other.start,
                        end=other.end,
                    )
                )
        except FhirError as exc:
            log.warning("stays_lookup_failed", error=type(exc).__name__)
        self._server_stays[view.patient] = found
        return found

    async def patient(self, reference: str) -> Mapping[str, Any] | None:
        """The Patient: its journalled snapshot, else read from the server."""
        if reference in self._patients:
            return self._patients[reference]
        kind, _, pid = reference.partition("/")
        snapshot = self.store.snapshot(self.server, kind, pid)
        found: Mapping[str, Any] | None = snapshot.resource if snapshot is not None else None
        if found is None and self.client is not None:
            try:
                found = await self.client.read(kind, pid)
            except FhirError as exc:
                log.warning("patient_lookup_failed", error=type(exc).__name__)
        self._patients[reference] = found
        return found

    async def care_team(self, patient: str) -> list[tuple[str, str]]:
        """``(role code, member)`` of the patient's active CareTeams."""
        if patient in self._care_teams:
            return self._care_teams[patient]
        members: list[tuple[str, str]] = []
        if self.client is not None:
            try:
                async for team in self.client.search(
                    "CareTeam", {"patient": patient, "status": "active"}
                ):
                    # servers that ignore unknown search parameters return every team
                    if team.get("status") != "active":
                        continue
                    if local_reference(team.get("subject")) != patient:
                        continue
                    for participant in team.get("participant") or ():
                        member = local_reference(participant.get("member"))
                        for role in participant.get("role") or ():
                            for coding in role.get("coding") or ():
                                if member and coding.get("code"):
                                    members.append((str(coding["code"]), member))
            except FhirError as exc:
                log.warning("care_team_lookup_failed", error=type(exc).__name__)
        self._care_teams[patient] = members
        return members

    def forget(self) -> None:
        """Drop the per-run caches (patients, care teams, server stays)."""
        self._patients.clear()
        self._care_teams.clear()
        self._server_stays.clear()
