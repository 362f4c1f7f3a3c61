"""The FHIR client against a real server: paging, conditional create, If-Match, round trips,
and every auth mode sekmet can enforce."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhirbridge.errors import AuthError, VersionConflict
from fhirbridge.fhir import BasicAuth, BearerAuth, FhirClient, SmartBackendAuth
from fhirbridge.testing.sekmet import SekmetServer

pytestmark = pytest.mark.e2e


def _patient(tag: str, n: int) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:paging", "value": f"{tag}-{n}"}],
        "name": [{"family": f"Paging{n}", "given": ["Test"]}],
        "gender": "unknown",
    }


async def test_search_spanning_pages_returns_each_resource_once(sekmet: SekmetServer) -> None:
    """A search over 3+ pages (next links followed verbatim) yields every match exactly once."""
    tag = uuid.uuid4().hex[:8]
    async with FhirClient(sekmet.base_url) as client:
        for n in range(23):
            await client.create(_patient(tag, n))
        pages = 0
        seen: list[str] = []
        async for page in client.pages("Patient", {"identifier": "urn:test:paging|", "_count": 7}):
            pages += 1
            seen.extend(r["id"] for r in page.resources)
    assert pages >= 4
    assert len(seen) == 23 == len(set(seen))


async def test_conditional_create_twice_yields_one_resource(sekmet: SekmetServer) -> None:
    """If-None-Exist on an identifier: the first create makes it, the second finds it."""
    async with FhirClient(sekmet.base_url) as client:
        body = _patient("cc", 1)
        query = "identifier=urn:test:paging|cc-1"
        first = await client.create(body, if_none_exist=query)
        second = await client.create(body, if_none_exist=query)
        found = await client.search_all("Patient", {"identifier": "urn:test:paging|cc-1"})
    assert first.created and not second.created
    assert first.id == second.id
    assert [p["id"] for p in found] == [first.id]


async def test_stale_if_match_raises_version_conflict(sekmet: SekmetServer) -> None:
    """A versioned update with an old version is refused as a VersionConflict (412)."""
    async with FhirClient(sekmet.base_url) as client:
        created = await client.create(_patient("vc", 1))
        current = created.resource
        updated = await client.update({**current, "gender": "female"}, if_match="1")
        assert updated.version_id == "2"
        with pytest.raises(VersionConflict) as caught:
            await client.update({**current, "gender": "male"}, if_match="1")
    assert caught.value.status == 412
    assert caught.value.issues and caught.value.issues[0].code == "conflict"


async def test_create_read_round_trip_preserves_the_resource(sekmet: SekmetServer) -> None:
    """What is created is what is read back (besides server-set id and meta)."""
    body = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "description": "Round trip",
        "for": {"reference": "Patient/example"},
        "restriction": {"period": {"end": "2026-12-29"}},
        "identifier": [{"system": "urn:test", "value": "rt-1"}],
        "meta": {"tag": [{"system": "urn:test", "code": "x"}]},
    }
    async with FhirClient(sekmet.base_url) as client:
        created = await client.create(body)
        read = await client.read("Task", created.id or "")
    for key in ("status", "intent", "priority", "description", "for", "restriction", "identifier"):
        assert read[key] == body[key]
    assert read["meta"]["tag"] == body["meta"]["tag"]  # type: ignore[index]
    assert read["meta"]["versionId"] == "1"


async def test_capabilities_are_read_once(sekmet: SekmetServer) -> None:
    """The CapabilityStatement is an R4 server's and the client caches it."""
    async with FhirClient(sekmet.base_url) as client:
        first = await client.capabilities()
        assert await client.capabilities() is first
    assert first["fhirVersion"] == "4.0.1"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the secured server (its keys live in ``keys/``)."""
    return tmp_path_factory.mktemp("secured")


@pytest.fixture(scope="module")
def secured(key_dir: Path) -> Iterator[SekmetServer]:
    """A sekmet server that accepts basic, bearer and SMART (RS384 and ES384 clients)."""
    tmp_path = key_dir
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    keys = tmp_path / "keys"
    keys.mkdir()
    for name, key in (("rsa", rsa_key), ("ec", ec_key)):
        (keys / f"{name}.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (keys / f"{name}.pub.pem").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    auth = {
        "types": ["basic", "bearer", "smart"],
        "users": {"engine": "s3cret"},
        "tokens": ["static-token-1"],
        "smart_clients": [
            {
                "client_id": "bridge-rsa",
                "public_key_path": str(keys / "rsa.pub.pem"),
                "scopes": "system/*.cruds",
            },
            {
                "client_id": "bridge-ec",
                "public_key_path": str(keys / "ec.pub.pem"),
                "scopes": "system/Patient.rs",
            },
        ],
        "token_lifetime": 300,
    }
    with SekmetServer.start(tmp_path / "sekmet", auth=auth) as server:
        yield server


async def test_unauthenticated_requests_are_refused(secured: SekmetServer) -> None:
    """Without credentials the server answers 401, raised as AuthError."""
    async with FhirClient(secured.base_url) as client:
        with pytest.raises(AuthError) as caught:
            await client.search_all("Patient")
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "auth",
    [
        BasicAuth("engine", "s3cret"),  # HTTP basic
        BearerAuth("static-token-1"),  # a static token
    ],
    ids=["basic", "bearer"],
)
async def test_static_credentials_are_accepted(secured: SekmetServer, auth: object) -> None:
    """Basic and static bearer credentials read and write on the secured server."""
    async with FhirClient(secured.base_url, auth=auth) as client:  # type: ignore[arg-type]
        created = await client.create(_patient("auth", 1))
        assert (await client.read("Patient", created.id or ""))["id"] == created.id


@pytest.mark.parametrize(
    ("client_id", "key_file", "algorithm"),
    [
        ("bridge-rsa", "rsa.pem", "RS384"),  # RSA key, RS384 assertion
        ("bridge-ec", "ec.pem", "ES384"),  # P-384 key, ES384 assertion
    ],
)
async def test_smart_backend_services(
    secured: SekmetServer, key_dir: Path, client_id: str, key_file: str, algorithm: str
) -> None:
    """SMART Backend Services: discovery, signed assertion, token, then FHIR reads."""
    auth = SmartBackendAuth(
        fhir_base=secured.base_url,
        client_id=client_id,
        private_key=(key_dir / "keys" / key_file).read_text(),
        key_id=f"{client_id}-key",
        algorithm=algorithm,
        scopes=["system/Patient.rs"],
    )
    async with FhirClient(secured.base_url, auth=auth) as client:
        await client.search_all("Patient", {"_count": 1})
        await client.search_all("Patient", {"_count": 1})
    assert auth.token_url is not None and auth.token_url.endswith("/auth/token")
    assert auth.granted_scope == "system/Patient.rs"


async def test_smart_scopes_are_enforced(secured: SekmetServer, key_dir: Path) -> None:
    """A token granted only Patient read cannot write a Task: 403 becomes AuthError."""
    auth = SmartBackendAuth(
        fhir_base=secured.base_url,
        client_id="bridge-ec",
        private_key=(key_dir / "keys" / "ec.pem").read_text(),
        key_id="k",
        algorithm="ES384",
        scopes=["system/Patient.rs"],
    )
    async with FhirClient(secured.base_url, auth=auth) as client:
        with pytest.raises(AuthError) as caught:
            await client.create({"resourceType": "Task", "status": "draft", "intent": "order"})
    assert caught.value.status == 403
