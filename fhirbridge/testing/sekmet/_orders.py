"""Order workflows: lab orders and their results, cancellations, and outgoing referrals."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fhirbridge.testing.sekmet._fhir import JSON, SNOMED, coding, instant_now, reference
from fhirbridge.testing.sekmet._workflows import WorkflowRunner


class OrderWorkflows(WorkflowRunner):
    """Orders and referrals, by sekmet workflow or, where it has none, by REST."""

    def lab_order(
        self,
        patient_id: str,
        *,
        encounter_id: str | None = None,
        test: str = "58410-2",
        priority: str = "routine",
    ) -> tuple[str, str]:
        """Place a lab order (workflow ``orders.lab_order``): (ServiceRequest id, Task id).

        One transaction writes an active ``ServiceRequest`` (LOINC ``test``, category SNOMED
        108252007, performer the lab) and a ``requested`` fulfilment ``Task`` (``focus`` and
        ``basedOn`` the ServiceRequest, ``owner`` the lab).  Tests: 58410-2 CBC, 51990-0 BMP,
        2345-7, 4548-4, 2160-0.
        """
        result = self.run_workflow(
            "orders.lab_order",
            {"patient": patient_id, "encounter": encounter_id, "test": test, "priority": priority},
        )
        return str(result["service_request"]["id"]), str(result["task"]["id"])

    def accept_order(self, service_request_id: str) -> JSON:
        """The filler accepts (workflow ``orders.accept``): Task ``accepted``; returns the Task."""
        result = self.run_workflow("orders.accept", {"service_request": service_request_id})
        task: JSON = result["task"]
        return task

    def lab_result(self, service_request_id: str, *, status: str = "final") -> JSON:
        """Report results (workflow ``orders.lab_result``); returns the DiagnosticReport.

        Observations and a DiagnosticReport are written in one transaction; with a final
        status the Task becomes ``completed`` and the ServiceRequest ``completed``.
        """
        result = self.run_workflow(
            "orders.lab_result", {"service_request": service_request_id, "status": status}
        )
        report: JSON = result["diagnostic_report"]
        return report

    def cancel_order(self, service_request_id: str, *, reason: str = "Ordered in error") -> JSON:
        """Revoke an order (workflow ``orders.cancel``); returns the ServiceRequest.

        The ServiceRequest becomes ``revoked`` with a note, its Task ``cancelled`` with
        ``statusReason``.
        """
        result = self.run_workflow(
            "orders.cancel", {"service_request": service_request_id, "reason": reason}
        )
        service_request: JSON = result["service_request"]
        return service_request

    def referral(
        self,
        patient_id: str,
        *,
        encounter_id: str | None = None,
        code: Mapping[str, Any] | None = None,
        with_task: bool = False,
    ) -> str:
        """Create an outgoing referral ``ServiceRequest`` by REST; returns its id.

        sekmet has no referral workflow.  The ServiceRequest is ``active``/``order``, category
        SNOMED 3457005 (Patient referral), ``code`` a CodeableConcept (default SNOMED 306206005,
        Referral to service), requester the attending.  With ``with_task`` a ``requested``
        Task (``focus``/``basedOn`` the ServiceRequest, code ``fulfill``) is written too.
        """
        facility = self.facility()
        service_request: JSON = {
            "resourceType": "ServiceRequest",
            "identifier": [
                {"system": "urn:oid:1.2.3.4.5.3", "value": f"REF{uuid.uuid4().hex[:12]}"}
            ],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [coding(SNOMED, "3457005", "Patient referral")]}],
            "code": dict(code)
            if code
            else {"coding": [coding(SNOMED, "306206005", "Referral to service")]},
            "subject": reference("Patient", patient_id),
            "authoredOn": instant_now(),
            "requester": reference("Practitioner", facility["practitioner:attending"]["id"]),
        }
        if encounter_id:
            service_request["encounter"] = reference("Encounter", encounter_id)
        created = self.create(service_request)
        if with_task:
            self.create(
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "code": {
                        "coding": [coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]
                    },
                    "focus": reference("ServiceRequest", created["id"]),
                    "basedOn": [reference("ServiceRequest", created["id"])],
                    "for": reference("Patient", patient_id),
                    "authoredOn": instant_now(),
                }
            )
        return str(created["id"])
