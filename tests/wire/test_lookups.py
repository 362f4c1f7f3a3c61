"""Lookups on the wire (``httpx.MockTransport``): one ``batch`` Bundle for every patient of a
batch of versions, its searchsets followed to their last page, the cache for the run, and
the fall-backs for a server that refuses batches or several patients in one search."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RetryPolicy
from fhirbridge.pipeline import Lookups
from fhirbridge.store import MemoryStore

BASE = "https://ehr.example.org/fhir"


class Server:
    """Patients p1..p3 with one active CareTeam and two Conditions each; answers searches
    (a page of one resource at a time when ``paged``) and, unless ``batches`` is False,
    batch Bundles; ``single`` refuses searches that name several patients."""

    def __init__(
        self,
        *,
        batches: bool = True,
        single: bool = False,
        paged: bool = False,
        garbled: bool = False,
    ) -> None:
        self.batches, self.single, self.paged, self.garbled = batches, single, paged, garbled
        self.requests: list[str] = []
        self.resources: list[dict[str, Any]] = []
        for n in (1, 2, 3):
            patient = f"Patient/p{n}"
            self.resources.append({"resourceType": "Patient", "id": f"p{n}"})
            self.resources.append(
                {
                    "resourceType": "CareTeam",
                    "id": f"ct{n}",
                    "status": "active",
                    "subject": {"reference": patient},
                    "participant": [
                        {
                            "role": [{"coding": [{"code": "case-manager"}]}],
                            "member": {"reference": f"Practitioner/cm{n}"},
                        }
                    ],
                }
            )
            for c in (1, 2):
                self.resources.append(
                    {
                        "resourceType": "Condition",
                        "id": f"c{n}{c}",
                        "subject": {"reference": patient},
                    }
                )

    def search(self, url: str) -> httpx.Response:
        """A searchset for ``Type?query`` (``_offset`` pages when paged)."""
        parts = urlsplit(url)
        kind = parts.path.rstrip("/").split("/")[-1]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        patients = set(query.get("patient", "").split(",")) - {""}
        if self.single and len(patients) > 1:
            return httpx.Response(400, json={"resourceType": "OperationOutcome"})
        ids = set(query.get("_id", "").split(",")) - {""}
        found = [
            r
            for r in self.resources
            if r["resourceType"] == kind
            and (not ids or r["id"] in ids)
            and (not patients or r.get("subject", {}).get("reference") in patients)
        ]
        offset = int(query.get("_offset", "0"))
        page = found[offset : offset + 1] if self.paged else found
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in page],
        }
        if self.paged and offset + 1 < len(found):
            rest = {**query, "_offset": str(offset + 1)}
            link = f"{BASE}/{kind}?" + "&".join(f"{k}={v}" for k, v in rest.items())
            bundle["link"] = [{"relation": "next", "url": link}]
        return httpx.Response(200, json=bundle)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path.removeprefix('/fhir')}")
        if request.method == "POST":
            if not self.batches:
                return httpx.Response(405, json={"resourceType": "OperationOutcome"})
            if self.garbled:
                return httpx.Response(200, json={"resourceType": "Bundle", "entry": [5, {"x": 1}]})
            entries = []
            for entry in json.loads(request.content)["entry"]:
                answer = self.search(f"{BASE}/{entry['request']['url']}")
                entries.append(
                    {"resource": answer.json(), "response": {"status": str(answer.status_code)}}
                )
            return httpx.Response(
                200, json={"resourceType": "Bundle", "type": "batch-response", "entry": entries}
            )
        return self.search(str(request.url))


def lookups(server: Server) -> Lookups:
    """Lookups through ``server``."""
    client = FhirClient(BASE, transport=httpx.MockTransport(server), retry=RetryPolicy(attempts=1))
    return Lookups(client, MemoryStore(), server="default")


PATIENTS = ["Patient/p1", "Patient/p2", "Patient/p3"]


async def test_one_batch_for_every_patient_then_the_cache() -> None:
    """Patients, care teams and risk inputs of three patients: one POST; answering them
    afterwards (and prefetching again) sends nothing."""
    server = Server()
    found = lookups(server)
    await found.prefetch(PATIENTS, stays=PATIENTS, risk=PATIENTS)
    assert server.requests == ["POST "] and found.requests == 1
    assert await found.care_team("Patient/p2") == [("case-manager", "Practitioner/cm2")]
    assert (await found.patient("Patient/p3") or {})["id"] == "p3"
    inputs = await found.risk_inputs("Patient/p1")
    assert [c["id"] for c in inputs["conditions"]] == ["c11", "c12"]
    await found.prefetch(PATIENTS, stays=PATIENTS, risk=PATIENTS)
    assert server.requests == ["POST "]
    found.forget()
    await found.prefetch(PATIENTS)
    assert server.requests == ["POST ", "POST "]


async def test_searchsets_in_a_batch_are_followed_to_their_last_page() -> None:
    """A searchset with a ``next`` link is read to the end."""
    server = Server(paged=True)
    found = lookups(server)
    await found.prefetch(PATIENTS, stays=PATIENTS, risk=PATIENTS)
    inputs = await found.risk_inputs("Patient/p3")
    assert sorted(c["id"] for c in inputs["conditions"]) == ["c31", "c32"]
    assert server.requests[0] == "POST " and found.requests == len(server.requests)


async def test_a_server_without_batch_is_searched_one_search_at_a_time() -> None:
    """A refused batch is not tried again: each search goes by GET, for all patients."""
    server = Server(batches=False)
    found = lookups(server)
    await found.prefetch(PATIENTS)
    assert server.requests == ["POST ", "GET /Patient", "GET /CareTeam"]
    await found.prefetch(["Patient/p9"], risk=["Patient/p9"])
    assert "POST " not in server.requests[3:]
    assert await found.care_team("Patient/p1") == [("case-manager", "Practitioner/cm1")]


async def test_a_search_refused_for_several_patients_is_asked_per_patient() -> None:
    """A server that takes one patient per search: the refused entry is asked per patient."""
    server = Server(single=True)
    found = lookups(server)
    await found.prefetch(PATIENTS)
    assert server.requests.count("GET /CareTeam") == 3
    for n in (1, 2, 3):
        assert await found.care_team(f"Patient/p{n}") == [("case-manager", f"Practitioner/cm{n}")]


async def test_a_batch_answer_that_cannot_be_read_is_asked_again_by_search() -> None:
    """Entries that are not entries: each search is asked again by GET, per patient."""
    server = Server(garbled=True)
    found = lookups(server)
    await found.prefetch(PATIENTS)
    assert server.requests == ["POST ", *["GET /Patient"] * 3, *["GET /CareTeam"] * 3]
    assert await found.care_team("Patient/p3") == [("case-manager", "Practitioner/cm3")]
