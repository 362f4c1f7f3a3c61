"""Credentials on the wire: static bearer, basic, and SMART Backend Services."""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fhirbridge.errors import AuthError
from fhirbridge.fhir.auth import JWT_BEARER, BasicAuth, BearerAuth, SmartBackendAuth
from fhirbridge.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"
SMART_CONFIG = f"{BASE}/.well-known/smart-configuration"
TOKEN_URL = "https://auth.example.org/oauth2/token"
CLIENT_ID = "fhirbridge-engine"
PATIENT = {"resourceType": "Patient", "id": "1"}
T0 = 1_700_000_000.0


class FakeClock:
    """A settable ``time.time`` replacement."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TokenServer:
    """A token endpoint: issues ``tok-1``, ``tok-2``, ... and keeps each request's form."""

    def __init__(self, expires_in: int = 300) -> None:
        self.expires_in = expires_in
        self.forms: list[dict[str, str]] = []
        self.content_types: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        self.content_types.append(request.headers["content-type"])
        return httpx.Response(
            200,
            json={
                "access_token": f"tok-{len(self.forms)}",
                "token_type": "bearer",
                "expires_in": self.expires_in,
                "scope": form.get("scope", ""),
            },
        )


def pem(key: PrivateKeyTypes) -> str:
    """A private key as unencrypted PKCS#8 PEM text."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key for RS384."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-384 key for ES384."""
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def clock() -> FakeClock:
    """The clock the SMART auth reads; tests move it."""
    return FakeClock()


@pytest.fixture
def tokens() -> TokenServer:
    """The fake token endpoint's state."""
    return TokenServer()


@pytest.fixture
def smart_server(router: respx.MockRouter, tokens: TokenServer) -> dict[str, respx.Route]:
    """Routes for SMART discovery and the token endpoint."""
    discovery = router.get(SMART_CONFIG).respond(
        200,
        json={
            "token_endpoint": TOKEN_URL,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "capabilities": ["client-confidential-asymmetric", "permission-v2"],
        },
    )
    token = router.post(TOKEN_URL).mock(side_effect=tokens)
    return {"discovery": discovery, "token": token}


@pytest.fixture
def smart_auth(rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> SmartBackendAuth:
    """SMART auth with an RS384 key, discovering its token endpoint."""
    return SmartBackendAuth(
        fhir_base=BASE,
        client_id=CLIENT_ID,
        private_key=pem(rsa_key),
        key_id="key-2026",
        scopes=("system/Task.cu", "system/Encounter.rs"),
        clock=clock,
    )


@pytest.fixture
def smart_client(
    make_client: Callable[..., FhirClient],
    smart_auth: SmartBackendAuth,
    smart_server: dict[str, respx.Route],
) -> FhirClient:
    """A client using ``smart_auth`` against the SMART routes."""
    return make_client(auth=smart_auth)


def authorizations(route: respx.Route) -> list[str]:
    """The Authorization header of each call to ``route``."""
    return [call.request.headers.get("authorization", "") for call in route.calls]


# -- static credentials --------------------------------------------------------------------


async def test_bearer_token_is_sent(
    make_client: Callable[..., FhirClient], router: respx.MockRouter
) -> None:
    """BearerAuth puts ``Authorization: Bearer <token>`` on every request."""
    client = make_client(auth=BearerAuth("s3cret"))
    route = router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await client.read("Patient", "1")
    await client.read("Patient", "1")

    assert authorizations(route) == ["Bearer s3cret", "Bearer s3cret"]


async def test_basic_credentials_are_sent(
    make_client: Callable[..., FhirClient], router: respx.MockRouter
) -> None:
    """BasicAuth sends RFC 7617 ``Basic base64(user:password)`` and hides it in repr."""
    auth = BasicAuth("bridge", "pa:ss")
    client = make_client(auth=auth)
    route = router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await client.read("Patient", "1")

    expected = base64.b64encode(b"bridge:pa:ss").decode()
    assert authorizations(route) == [f"Basic {expected}"]
    assert "pa:ss" not in repr(auth)


async def test_401_with_a_static_token_is_final(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """A static token cannot be refreshed, so a 401 raises AuthError after one request."""
    client = make_client(auth=BearerAuth("expired"))
    route = router.get(f"{BASE}/Patient/1").respond(401)

    with pytest.raises(AuthError):
        await client.read("Patient", "1")

    assert route.call_count == 1
    assert waits == []


# -- SMART Backend Services ----------------------------------------------------------------


async def test_smart_discovers_the_token_endpoint_and_sends_the_token(
    smart_client: FhirClient, router: respx.MockRouter, smart_server: dict[str, respx.Route]
) -> None:
    """The token endpoint is read from ``.well-known/smart-configuration`` and the issued
    token is sent as a bearer token to the FHIR server."""
    route = router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await smart_client.read("Patient", "1")

    assert smart_server["discovery"].call_count == 1
    assert smart_server["token"].call_count == 1
    assert authorizations(route) == ["Bearer tok-1"]


async def test_smart_token_request_form(
    smart_client: FhirClient, router: respx.MockRouter, tokens: TokenServer
) -> None:
    """The token request is a form POST with the client_credentials grant, the jwt-bearer
    assertion type, the space-separated scopes and a client assertion."""
    router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await smart_client.read("Patient", "1")

    assert tokens.content_types == ["application/x-www-form-urlencoded"]
    form = tokens.forms[0]
    assert set(form) == {"grant_type", "client_assertion_type", "scope", "client_assertion"}
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == JWT_BEARER
    assert form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assert form["scope"] == "system/Task.cu system/Encounter.rs"


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
async def test_smart_assertion_is_a_valid_signed_jwt(
    make_client: Callable[..., FhirClient],
    router: respx.MockRouter,
    smart_server: dict[str, respx.Route],
    tokens: TokenServer,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    clock: FakeClock,
    algorithm: str,
) -> None:
    """The assertion verifies with the public key and carries the SMART header and claims:
    alg, kid, typ; iss = sub = client_id, aud = token URL, exp at most 5 minutes ahead."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa_key if algorithm == "RS384" else ec_key
    )
    auth = SmartBackendAuth(
        fhir_base=BASE,
        client_id=CLIENT_ID,
        private_key=pem(key),
        key_id="kid-7",
        algorithm=algorithm,
        clock=clock,
    )
    router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await make_client(auth=auth).read("Patient", "1")

    assertion = tokens.forms[0]["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == algorithm
    assert header["kid"] == "kid-7"
    assert header["typ"] == "JWT"
    claims = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=[algorithm],
        audience=TOKEN_URL,
        options={"verify_exp": False},  # the injected clock is in the past
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert T0 < claims["exp"] <= T0 + 300
    assert claims["jti"]


async def test_smart_assertion_jti_is_unique(
    smart_auth: SmartBackendAuth,
    smart_client: FhirClient,
    router: respx.MockRouter,
    tokens: TokenServer,
) -> None:
    """Each token request signs a new assertion with a new ``jti`` (no replay)."""
    router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await smart_client.read("Patient", "1")
    smart_auth.invalidate()
    await smart_client.read("Patient", "1")

    jtis = [
        jwt.decode(f["client_assertion"], options={"verify_signature": False})["jti"]
        for f in tokens.forms
    ]
    assert len(jtis) == 2
    assert jtis[0] != jtis[1]


async def test_smart_token_is_cached_across_requests(
    smart_client: FhirClient, router: respx.MockRouter, smart_server: dict[str, respx.Route]
) -> None:
    """Three reads within the token's lifetime make one discovery and one token request."""
    route = router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    for _ in range(3):
        await smart_client.read("Patient", "1")

    assert smart_server["discovery"].call_count == 1
    assert smart_server["token"].call_count == 1
    assert authorizations(route) == ["Bearer tok-1"] * 3


async def test_smart_token_is_refreshed_near_expiry(
    smart_client: FhirClient,
    router: respx.MockRouter,
    smart_server: dict[str, respx.Route],
    clock: FakeClock,
) -> None:
    """A 300 s token is reused until ``refresh_margin`` (30 s) before expiry, then replaced
    without a second discovery."""
    route = router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await smart_client.read("Patient", "1")
    clock.now = T0 + 269
    await smart_client.read("Patient", "1")
    clock.now = T0 + 271
    await smart_client.read("Patient", "1")

    assert authorizations(route) == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    assert smart_server["token"].call_count == 2
    assert smart_server["discovery"].call_count == 1


async def test_smart_401_refreshes_the_token_once_and_retries(
    smart_client: FhirClient,
    router: respx.MockRouter,
    smart_server: dict[str, respx.Route],
    waits: list[float],
) -> None:
    """A 401 (token revoked early) fetches exactly one new token and repeats the request
    without a backoff wait."""
    route = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json=PATIENT)]
    )

    assert await smart_client.read("Patient", "1") == PATIENT
    assert authorizations(route) == ["Bearer tok-1", "Bearer tok-2"]
    assert smart_server["token"].call_count == 2
    assert waits == [0.0]


async def test_smart_second_401_is_an_auth_error(
    smart_client: FhirClient, router: respx.MockRouter, smart_server: dict[str, respx.Route]
) -> None:
    """When the fresh token is refused too, AuthError is raised; no third token or request."""
    route = router.get(f"{BASE}/Patient/1").respond(401)

    with pytest.raises(AuthError) as caught:
        await smart_client.read("Patient", "1")

    assert caught.value.status == 401
    assert route.call_count == 2
    assert smart_server["token"].call_count == 2


async def test_smart_401_on_a_create_is_retried_with_a_new_token(
    smart_client: FhirClient, router: respx.MockRouter
) -> None:
    """A 401 means the server did nothing, so even a plain create is repeated once."""
    route = router.post(f"{BASE}/Task").mock(
        side_effect=[httpx.Response(401), httpx.Response(201, json={"resourceType": "Task"})]
    )

    result = await smart_client.create({"resourceType": "Task"})

    assert result.created is True
    assert authorizations(route) == ["Bearer tok-1", "Bearer tok-2"]


async def test_token_endpoint_error_is_an_auth_error_with_its_description(
    smart_client: FhirClient, router: respx.MockRouter
) -> None:
    """An OAuth error from the token endpoint raises AuthError quoting error_description;
    the FHIR request is never sent."""
    router.post(TOKEN_URL).respond(
        400, json={"error": "invalid_client", "error_description": "unknown kid key-2026"}
    )
    route = router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    with pytest.raises(AuthError, match="unknown kid key-2026") as caught:
        await smart_client.read("Patient", "1")

    assert caught.value.status == 400
    assert route.call_count == 0


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, json=["not", "an", "object"]),  # JSON, but not a token response
        httpx.Response(200, text="<html>sign in</html>"),  # an HTML login page
        httpx.Response(200, json={"token_type": "bearer"}),  # no access_token
    ],
)
async def test_unusable_token_response_is_an_auth_error(
    smart_client: FhirClient, router: respx.MockRouter, reply: httpx.Response
) -> None:
    """A 200 from the token endpoint without a usable access_token raises AuthError."""
    router.post(TOKEN_URL).mock(return_value=reply)
    router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    with pytest.raises(AuthError):
        await smart_client.read("Patient", "1")


async def test_missing_smart_configuration_says_to_set_token_url(
    smart_client: FhirClient, router: respx.MockRouter
) -> None:
    """Without ``.well-known/smart-configuration`` the AuthError tells to set token_url."""
    router.get(SMART_CONFIG).respond(404)

    with pytest.raises(AuthError, match="token_url") as caught:
        await smart_client.read("Patient", "1")

    assert caught.value.status == 404


async def test_configured_token_url_skips_discovery(
    make_client: Callable[..., FhirClient],
    router: respx.MockRouter,
    smart_server: dict[str, respx.Route],
    tokens: TokenServer,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    """With ``token_url`` set, no discovery request is made and it is the assertion's aud."""
    other = "https://login.example.org/token"
    router.post(other).mock(side_effect=tokens)
    auth = SmartBackendAuth(
        fhir_base=BASE,
        client_id=CLIENT_ID,
        private_key=pem(rsa_key),
        key_id="k",
        token_url=other,
    )
    router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await make_client(auth=auth).read("Patient", "1")

    assert smart_server["discovery"].call_count == 0
    claims = jwt.decode(tokens.forms[0]["client_assertion"], options={"verify_signature": False})
    assert claims["aud"] == other


async def test_smart_granted_scope_is_recorded(
    smart_client: FhirClient, smart_auth: SmartBackendAuth, router: respx.MockRouter
) -> None:
    """The scope the token endpoint granted (which may differ from the request) is kept."""
    router.post(TOKEN_URL).respond(
        200, json={"access_token": "t", "expires_in": 300, "scope": "system/Encounter.rs"}
    )
    router.get(f"{BASE}/Patient/1").respond(200, json=PATIENT)

    await smart_client.read("Patient", "1")

    assert smart_auth.granted_scope == "system/Encounter.rs"
