"""Capabilities by probing: the ServerProfile against servers whose behaviour differs from
their CapabilityStatement, reproduced on the wire."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fhirbridge.config import load_config
from fhirbridge.fhir.auth import SmartBackendAuth, missing_scopes, scope_covers
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.probe import PROBE_TAG, discover, server_profile
from fhirbridge.preflight import preflight
from tests.wire._client import ClientFactory
from tests.wire._medplum import BASE, MedplumLike


@pytest.fixture
def medplum(router: respx.MockRouter) -> MedplumLike:
    """A Medplum-like server answering every request to its host."""
    server = MedplumLike()
    router.route(host="medplum.example.org").mock(side_effect=server.handle)
    return server


@pytest.fixture
def mp_client(make_client: ClientFactory, medplum: MedplumLike) -> FhirClient:
    """A client on the Medplum-like server."""
    return make_client(BASE)


async def test_versioned_declaration_with_enforced_if_match_is_probed_yes(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """`versioning: "versioned"` with If-Match enforced (200 current, 412 stale): the probe
    says supported, from "probed", where the declaration alone said no."""
    profile = await discover(mp_client)

    assert profile.versioned_update.supported
    assert profile.versioned_update.source == "probed"
    assert "412" in profile.versioned_update.detail
    puts = [r for r in medplum.requests if r[0] == "PUT"]
    assert len(puts) == 2  # current version, then stale


async def test_every_undeclared_need_is_probed_and_the_scratch_is_deleted(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """Conditional create (undeclared) and transactions with conditional entries are probed
    yes; nothing the probes made is left on the server."""
    profile = await discover(mp_client)

    assert (profile.conditional_create.supported, profile.conditional_create.source) == (
        True,
        "probed",
    )
    assert profile.transaction.supported and profile.write_path == "transaction"
    assert profile.test_write is not None and profile.test_write.supported
    assert medplum.resources == {}
    deletes = [r for r in medplum.requests if r[0] == "DELETE"]
    assert len(deletes) == 1


async def test_exact_instant_last_updated_is_millisecond_precision(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """A server comparing exact instants (`gt…:10Z` matches `…:10.148Z`) is found, and the
    poller is told to keep millisecond watermarks."""
    profile = await discover(mp_client)

    assert profile.last_updated_precision == "millisecond"
    assert profile.last_updated.source == "probed"
    assert "exact instants" in profile.last_updated.detail


async def test_identifier_search_probed_per_type(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """Types whose statement lists no identifier parameter are probed with an absent
    identifier: no match means the engine may create once by identifier."""
    profile = await discover(mp_client)

    assert profile.searchable_by_identifier("Task")
    assert profile.identifier_search["Task"].source == "probed"


async def test_scratch_resources_are_tagged_as_the_engines(
    router: respx.MockRouter, mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """Every scratch resource carries the engine tag and the probe tag."""
    created: list[dict[str, Any]] = []
    original = medplum.handle

    def spy(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/Basic"):
            created.append(json.loads(request.content))
        return original(request)

    router.routes.clear()
    router.route(host="medplum.example.org").mock(side_effect=spy)
    await discover(mp_client)

    assert created
    for body in created:
        codes = {t["code"] for t in body["meta"]["tag"]}
        assert {"fhirbridge", PROBE_TAG["code"]} <= codes


async def test_stale_if_match_accepted_means_no_versioned_update(
    router: respx.MockRouter, mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """A server that accepts a stale If-Match is found out: versioned update not supported."""
    original = medplum.handle

    def lax(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            request.headers.pop("if-match", None)
        return original(request)

    router.routes.clear()
    router.route(host="medplum.example.org").mock(side_effect=lax)
    profile = await discover(mp_client)

    assert not profile.versioned_update.supported
    assert "stale If-Match was accepted" in profile.versioned_update.detail


async def test_ignored_if_none_exist_is_found_and_its_duplicate_removed(
    router: respx.MockRouter, mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """A server that ignores If-None-Exist makes a second resource: the probe says no and
    deletes the duplicate too."""
    original = medplum.handle

    def ignoring(request: httpx.Request) -> httpx.Response:
        request.headers.pop("if-none-exist", None)
        return original(request)

    router.routes.clear()
    router.route(host="medplum.example.org").mock(side_effect=ignoring)
    profile = await discover(mp_client)

    assert not profile.conditional_create.supported
    assert medplum.resources == {}


async def test_profile_is_discovered_and_logged_once_per_client(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """server_profile() probes once; a second call costs no request."""
    first = await server_profile(mp_client)
    count = len(medplum.requests)
    second = await server_profile(mp_client)

    assert second is first
    assert len(medplum.requests) == count


async def test_no_probe_trusts_the_declaration_and_writes_nothing(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """probe=False: the declaration alone (versioned -> no), and no write on the server."""
    profile = await discover(mp_client, probe=False)

    assert not profile.versioned_update.supported
    assert profile.versioned_update.source == "declared"
    assert all(method == "GET" for method, _ in medplum.requests)


def _config(**fhir: Any) -> Any:
    return load_config(
        data={"fhir": {"base_url": BASE, **fhir}, "store": {"url": "memory://"}},
    )


async def test_preflight_passes_with_probed_rows(
    mp_client: FhirClient, medplum: MedplumLike
) -> None:
    """Against the Medplum-like server the preflight is ok, and its rows say "probed" where
    the statement said no."""
    report = await preflight(_config(), client=mp_client)

    assert report.ok, report.failed
    rows = {row.name: row for row in report.rows}
    assert rows["versioned update (If-Match)"].source == "probed"
    assert rows["Encounter: authenticated search (_count=1)"].ok
    searches = [p for m, p in medplum.requests if m == "GET" and p == "Encounter"]
    assert searches


async def test_preflight_fails_on_refused_credentials(
    mp_client: FhirClient, router: respx.MockRouter
) -> None:
    """A 401 on the authenticated search fails the check (the public /metadata is not
    enough) and says to check fhir.auth."""
    router.routes.clear()
    router.get(f"{BASE}/metadata").respond(200, json={"fhirVersion": "4.0.1", "rest": []})
    router.get(f"{BASE}/.well-known/smart-configuration").respond(404)
    router.route(method="GET", path__regex=r"/fhir/R4/\w+$").respond(
        401, json={"resourceType": "OperationOutcome"}
    )

    report = await preflight(_config(), client=mp_client)

    assert not report.ok
    failed = {row.name: row for row in report.failed}
    assert "no or wrong credentials" in failed["Task: authenticated search (_count=1)"].detail


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_preflight_names_the_missing_smart_scopes_of_a_403(
    make_client: ClientFactory, router: respx.MockRouter, medplum: MedplumLike
) -> None:
    """With SMART, a 403 on a search names the scope the granted token lacks."""
    token_url = "https://auth.example.org/oauth2/token"
    router.post(token_url).respond(
        200,
        json={
            "access_token": "t",
            "expires_in": 300,
            "scope": "system/Patient.rs system/Task.cruds",
        },
    )
    medplum.forbidden = {"Encounter"}
    auth = SmartBackendAuth(
        fhir_base=BASE, client_id="c", private_key=_pem(), key_id="k", token_url=token_url
    )
    client = make_client(BASE, auth=auth)

    report = await preflight(_config(), client=client)

    failed = {row.name: row for row in report.failed}
    detail = failed["Encounter: authenticated search (_count=1)"].detail
    assert "the token lacks system/Encounter.rs" in detail
    scopes = {row.name: row for row in report.rows}["SMART scopes granted"]
    assert "system/Subscription.cruds" in scopes.detail


@pytest.mark.parametrize(
    ("granted", "rtype", "letters", "covered"),
    [
        (["system/Task.cruds"], "Task", "cruds", True),  # v2 exact
        (["system/*.rs"], "Encounter", "rs", True),  # v2 wildcard type
        (["system/*.read"], "Encounter", "rs", True),  # v1 read covers search
        (["system/*.read"], "Task", "c", False),  # v1 read is not create
        (["system/Task.read", "system/Task.write"], "Task", "cruds", True),  # v1 pair
        (["user/Task.cruds"], "Task", "r", False),  # not a system scope
        (["system/Subscription.rs"], "Subscription", "cruds", False),  # partial
    ],
)
def test_scope_coverage(granted: list[str], rtype: str, letters: str, covered: bool) -> None:
    """SMART v1 and v2 system scopes, with wildcards, cover the letters they grant."""
    assert scope_covers(granted, rtype, letters) is covered


def test_missing_scopes_lists_what_is_not_covered() -> None:
    """missing_scopes names each need the grant does not cover."""
    needs = {"Task": "cruds", "Subscription": "cruds"}
    assert missing_scopes(["system/Task.cruds"], needs) == ["system/Subscription.cruds"]
