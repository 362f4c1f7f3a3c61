"""Connection errors name the URL; a certificate failure is not retried and says what to do."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import respx

from fhirbridge.config import load_config
from fhirbridge.errors import ConfigError, ResourceNotFound, TransportError
from fhirbridge.fhir import client_from_config, tls_verification
from fhirbridge.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"


async def test_a_refused_connection_names_the_url(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """A refused connection is retried, then reported with the server's URL (never the
    query: it may carry search values)."""
    router.get(f"{BASE}/Patient").mock(side_effect=httpx.ConnectError("Connection refused"))

    with pytest.raises(TransportError) as caught:
        await client.search_all("Patient", {"name": "Smith"})

    message = str(caught.value)
    assert f"cannot reach the FHIR server at {BASE}/Patient" in message
    assert "Smith" not in message
    assert waits  # retried


async def test_a_certificate_failure_is_not_retried_and_hints_at_a_ca_bundle(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """An untrusted certificate fails at once (a retry meets the same certificate) and says
    to set fhir.verify_tls to a CA bundle."""
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    error = httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    error.__cause__ = cause
    route = router.get(f"{BASE}/metadata").mock(side_effect=error)

    with pytest.raises(TransportError) as caught:
        await client.capabilities()

    assert route.call_count == 1
    assert waits == []
    assert "fhir.verify_tls" in str(caught.value) and BASE in str(caught.value)


async def test_a_wrong_base_path_says_so(client: FhirClient, router: respx.MockRouter) -> None:
    """404 on /metadata is a wrong fhir.base_url path, said in those words."""
    router.get(f"{BASE}/metadata").respond(404)

    with pytest.raises(ResourceNotFound) as caught:
        await client.capabilities()

    assert f"no FHIR server answers at {BASE}" in str(caught.value)
    assert "fhir.base_url" in str(caught.value)


def test_verify_tls_takes_a_ca_bundle_path(tmp_path: Path) -> None:
    """fhir.verify_tls accepts a CA bundle path, and the client verifies with it."""
    bundle = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        pytest.skip("no system CA bundle on this machine")
    config = load_config(data={"fhir": {"base_url": BASE, "verify_tls": str(bundle)}})

    assert config.fhir.verify_tls == bundle
    assert isinstance(tls_verification(config.fhir.verify_tls), ssl.SSLContext)
    assert isinstance(client_from_config(config.fhir), FhirClient)


@pytest.mark.parametrize("value", ["false", "true"])  # booleans from the environment stay booleans
def test_verify_tls_still_takes_booleans(value: str) -> None:
    """true/false keep their meaning."""
    config = load_config(
        data={"fhir": {"base_url": BASE}},
        environ={"FHIRBRIDGE_FHIR__VERIFY_TLS": value},
    )
    assert config.fhir.verify_tls is (value == "true")


def test_a_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """A CA bundle path that is not a file fails at load time, naming the key."""
    with pytest.raises(ConfigError, match="verify_tls"):
        load_config(data={"fhir": {"base_url": BASE, "verify_tls": str(tmp_path / "nope.pem")}})
