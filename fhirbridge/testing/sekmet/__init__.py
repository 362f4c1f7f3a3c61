"""Start a ``sekmet-fhir`` test FHIR R4 server on loopback and drive its hospital workflows.

``sekmet serve`` is a micro hospital information system: a FHIR R4 server with SQLite storage,
R4 rest-hook and topic-based (Backport IG) subscriptions, SMART Backend Services, bulk export and
a catalogue of hospital workflows (register, admit, transfer, discharge, orders...).  This module
starts one in a folder of its own and gives tests a small, typed handle on it::

    with SekmetServer.start(tmp_path) as server:
        patient_id = server.register_patient(family="Doe", given="Jane")
        encounter_id = server.admit(patient_id)
        server.discharge(encounter_id, disposition="snf")
        encounter = server.read("Encounter", encounter_id)

How the workflows are driven
    sekmet has no JSON API for its workflows, but its web console runs them over HTTP:
    ``POST {root}/ui/workflows/{key}`` (form fields = workflow arguments, ``_target``) answers an
    HTML fragment whose ``<pre>`` holds the workflow result as JSON.  That runs *inside the
    server process* (so the server's subscriptions and simulator see the writes) and takes a
    few milliseconds, against about 1.3 s for ``sekmet workflow run`` (a new Python process that
    opens the same SQLite file, delivers subscription notifications itself and never tells the
    server).  :meth:`SekmetServer.run_workflow` uses HTTP by default and the CLI on request.
    The console is not behind ``server_auth``: workflows need no credentials.

Where sekmet has no workflow (an emergency visit, a death, a referral, a non-inpatient
disposition, ED-to-inpatient conversion) the methods below write plain FHIR REST with the
harness's own credentials; each docstring says which mechanism it uses.

Only the standard library, httpx and PyYAML are used.  Facts about sekmet behind these choices
are in the project's notes on sekmet (``notes/sekmet.md``).
"""

from __future__ import annotations

from fhirbridge.testing.sekmet._command import sekmet_command
from fhirbridge.testing.sekmet._errors import SekmetError, SekmetStartError, SekmetWorkflowError
from fhirbridge.testing.sekmet._fhir import DISCHARGE_DISPOSITION_SYSTEM, ENCOUNTER_CLASS_SYSTEM
from fhirbridge.testing.sekmet._server import SekmetServer, free_port

__all__ = [
    "DISCHARGE_DISPOSITION_SYSTEM",
    "ENCOUNTER_CLASS_SYSTEM",
    "SekmetError",
    "SekmetServer",
    "SekmetStartError",
    "SekmetWorkflowError",
    "free_port",
    "sekmet_command",
]
