"""Encounter workflows: register, admit (inpatient, outpatient, ED), transfer, discharge, death."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from fhirbridge.testing.sekmet._fhir import (
    CLASS_DISPLAY,
    DISCHARGE_DISPOSITION_SYSTEM,
    ENCOUNTER_CLASS_SYSTEM,
    JSON,
    SNOMED,
    VISIT_NUMBER_SYSTEM,
    coding,
    instant_now,
    reference,
)
from fhirbridge.testing.sekmet._workflows import WorkflowRunner


class EncounterWorkflows(WorkflowRunner):
    """A patient's way through the hospital, by sekmet workflow or, where it has none, by REST."""

    def register_patient(
        self,
        *,
        mrn: str | None = None,
        family: str | None = None,
        given: str | None = None,
        gender: str | None = None,
        birth_date: str | None = None,
        seed: int | None = None,
    ) -> str:
        """Register a patient (workflow ``adt.register_patient``, A04); returns the Patient id.

        Fields left out are made up by sekmet (Faker); the MRN goes into
        ``identifier`` with system ``urn:oid:1.2.3.4.5.1`` and the create is conditional on it,
        so registering an existing MRN returns the existing patient.
        """
        result = self.run_workflow(
            "adt.register_patient",
            {
                "mrn": mrn,
                "family": family,
                "given": given,
                "gender": gender,
                "birth_date": birth_date,
                "seed": seed,
            },
        )
        return str(result["patient"]["id"])

    def admit(
        self,
        patient_id: str,
        *,
        encounter_class: str = "IMP",
        bed: str = "bed-401-1",
        reason: str | None = None,
        planned: bool = False,
    ) -> str:
        """Start an encounter for the patient; returns the Encounter id.

        - ``IMP``: workflow ``adt.admit`` (A01): status ``in-progress`` (``planned`` when
          ``planned``), ``location`` = the bed, ``hospitalization.admitSource`` = ``emd``.
        - ``AMB``: workflow ``adt.outpatient_visit`` (location ``opd-1``; ``bed`` ignored).
        - ``EMER``: :meth:`ed_visit` (plain REST).
        - any other v3 ActCode (``OBSENC``, ``SS``...): ``adt.admit``, then a REST update of
          ``Encounter.class``.

        ``bed`` is a sekmet location key: bed-401-1, bed-401-2, bed-502-1, bed-icu-1 (any key
        of its facility works, e.g. ``icu``).  ``reason`` is a SNOMED code of sekmet's catalogue
        or free text.
        """
        code = encounter_class.upper()
        if code == "EMER":
            return self.ed_visit(patient_id, reason=reason)
        if code == "AMB":
            result = self.run_workflow(
                "adt.outpatient_visit", {"patient": patient_id, "reason": reason}
            )
            return str(result["encounter"]["id"])
        result = self.run_workflow(
            "adt.admit", {"patient": patient_id, "bed": bed, "reason": reason, "planned": planned}
        )
        encounter: JSON = result["encounter"]
        if code != "IMP":
            encounter["class"] = coding(ENCOUNTER_CLASS_SYSTEM, code, CLASS_DISPLAY.get(code))
            encounter = self.update(encounter)
        return str(encounter["id"])

    def ed_visit(
        self, patient_id: str, *, reason: str | None = None, status: str = "in-progress"
    ) -> str:
        """Create an emergency Encounter (class ``EMER``) by REST; returns its id.

        sekmet has no ED workflow.  The Encounter looks like sekmet's own: a visit-number
        identifier, ``statusHistory``, SNOMED type 4525004 (Emergency department patient
        visit), priority ``EM``, the attending practitioner, the hospital as
        ``serviceProvider``, ``period.start`` = now.  No location (sekmet has no ED location).
        """
        facility = self.facility()
        now = instant_now()
        encounter: JSON = {
            "resourceType": "Encounter",
            "identifier": [{"system": VISIT_NUMBER_SYSTEM, "value": f"ED{uuid.uuid4().hex[:12]}"}],
            "status": status,
            "statusHistory": [{"status": status, "period": {"start": now}}],
            "class": coding(ENCOUNTER_CLASS_SYSTEM, "EMER", "emergency"),
            "type": [{"coding": [coding(SNOMED, "4525004", "Emergency department patient visit")]}],
            "priority": {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "EM", "emergency"
                    )
                ]
            },
            "subject": reference("Patient", patient_id),
            "participant": [
                {
                    "type": [
                        {
                            "coding": [
                                coding(
                                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "ATND",
                                    "attender",
                                )
                            ]
                        }
                    ],
                    "period": {"start": now},
                    "individual": reference(
                        "Practitioner", facility["practitioner:attending"]["id"]
                    ),
                }
            ],
            "period": {"start": now},
            "serviceProvider": reference("Organization", facility["org:hospital"]["id"]),
        }
        if reason:
            encounter["reasonCode"] = [{"text": reason}]
        return str(self.create(encounter)["id"])

    def admit_from_ed(self, encounter_id: str, *, bed: str = "bed-401-1") -> JSON:
        """Turn an ED Encounter into an inpatient one in place (REST update); returns it.

        ``class`` becomes ``IMP``, ``classHistory`` records the ``EMER`` period, the bed is
        appended to ``location`` and ``hospitalization.admitSource`` is ``emd`` (R4's way to
        say "admitted from the ED" without a new Encounter).  sekmet has no such workflow.
        """
        encounter = self.read("Encounter", encounter_id)
        now = instant_now()
        start = (encounter.get("period") or {}).get("start", now)
        old_class = encounter.get("class") or coding(ENCOUNTER_CLASS_SYSTEM, "EMER", "emergency")
        encounter["classHistory"] = [
            *encounter.get("classHistory", []),
            {"class": old_class, "period": {"start": start, "end": now}},
        ]
        encounter["class"] = coding(ENCOUNTER_CLASS_SYSTEM, "IMP", "inpatient encounter")
        location = self.facility()[f"location:{bed}"]
        encounter["location"] = [
            *encounter.get("location", []),
            {
                "location": reference("Location", location["id"]),
                "status": "active",
                "period": {"start": now},
            },
        ]
        hospitalization = encounter.setdefault("hospitalization", {})
        hospitalization["admitSource"] = {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/admit-source",
                    "emd",
                    "From accident/emergency department",
                )
            ]
        }
        return self.update(encounter)

    def start_encounter(self, encounter_id: str) -> JSON:
        """Planned → in-progress (workflow ``adt.start_encounter``); returns the Encounter."""
        result = self.run_workflow("adt.start_encounter", {"encounter": encounter_id})
        encounter: JSON = result["encounter"]
        return encounter

    def transfer(self, encounter_id: str, *, bed: str = "bed-502-1") -> JSON:
        """Move the patient to another bed (workflow ``adt.transfer``, A02); returns the Encounter.

        Active ``location`` entries become ``completed`` with ``period.end``; the new bed is
        appended as ``active``.  Only ``in-progress``, ``arrived`` and ``onleave`` encounters
        can be transferred.
        """
        result = self.run_workflow("adt.transfer", {"encounter": encounter_id, "bed": bed})
        encounter: JSON = result["encounter"]
        return encounter

    def discharge(self, encounter_id: str, disposition: str | None = "home") -> JSON:
        """Finish the encounter (workflow ``adt.discharge``, A03); returns the Encounter.

        sekmet sets ``status`` ``finished``, ``period.end``, closes locations, participants and
        ``statusHistory``, and, for class ``IMP`` only, writes
        ``hospitalization.dischargeDisposition`` = ``{system: DISCHARGE_DISPOSITION_SYSTEM,
        code: disposition}`` (no display; sekmet does not check the code).  For any other class
        the harness adds the same disposition with a REST update afterwards (so the Encounter
        ends with one more version).  ``disposition=None`` writes none for non-IMP classes.
        Finished, cancelled and entered-in-error encounters are refused.
        """
        result = self.run_workflow(
            "adt.discharge", {"encounter": encounter_id, "disposition": disposition}
        )
        encounter: JSON = result["encounter"]
        if disposition and (encounter.get("class") or {}).get("code") != "IMP":
            encounter.setdefault("hospitalization", {})["dischargeDisposition"] = {
                "coding": [coding(DISCHARGE_DISPOSITION_SYSTEM, disposition)]
            }
            encounter = self.update(encounter)
        return encounter

    def cancel(self, encounter_id: str) -> JSON:
        """Cancel the encounter (workflow ``adt.cancel_encounter``, A11); returns it.

        sekmet sets ``status`` ``cancelled`` whatever the current status (even ``finished``)
        and appends to ``statusHistory``; locations and period are left as they were.
        """
        result = self.run_workflow("adt.cancel_encounter", {"encounter": encounter_id})
        encounter: JSON = result["encounter"]
        return encounter

    def death(
        self,
        patient_id: str,
        *,
        when: str | None = None,
        encounter_id: str | None = None,
        as_boolean: bool = False,
    ) -> JSON:
        """Record the patient's death (REST update of the Patient); returns the Patient.

        sekmet has no death workflow.  ``Patient.deceasedDateTime`` is set to ``when`` (default
        now), or ``deceasedBoolean`` true with ``as_boolean`` (sekmet's ``deceased`` search
        parameter only sees ``deceasedBoolean``).  With ``encounter_id`` that encounter is
        first discharged with disposition ``exp`` (expired) unless it is already closed.
        """
        if encounter_id is not None:
            status = self.read("Encounter", encounter_id).get("status")
            if status not in ("finished", "cancelled", "entered-in-error"):
                self.discharge(encounter_id, "exp")
        patient = self.read("Patient", patient_id)
        patient.pop("deceasedBoolean", None)
        patient.pop("deceasedDateTime", None)
        if as_boolean:
            patient["deceasedBoolean"] = True
        else:
            patient["deceasedDateTime"] = when or instant_now()
        return self.update(patient)

    def encounters(self, patient_id: str) -> Iterator[JSON]:
        """Every Encounter of the patient (REST search ``Encounter?patient=``)."""
        yield from self.search("Encounter", {"patient": patient_id, "_count": "100"})
