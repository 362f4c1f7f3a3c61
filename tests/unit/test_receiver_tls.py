"""The receiver's TLS settings: plain, server TLS, and mutual TLS behind `receiver.tls_*`."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from fhirbridge.config import ReceiverConfig
from fhirbridge.receiver.server import uvicorn_config


def app() -> None:
    """Stands for the ASGI application."""


def test_plain_http_by_default() -> None:
    """Without certificates the receiver speaks plain HTTP (meant for loopback or a proxy)."""
    config = uvicorn_config(app, ReceiverConfig())
    assert config.ssl_certfile is None
    assert config.ssl_ca_certs is None


def test_mutual_tls_requires_client_certificates(tmp_path: Path) -> None:
    """With a client CA, clients must present a certificate that CA signed."""
    receiver = ReceiverConfig(
        tls_certfile=tmp_path / "cert.pem",
        tls_keyfile=tmp_path / "key.pem",
        tls_client_ca=tmp_path / "ca.pem",
    )
    config = uvicorn_config(app, receiver)
    assert config.ssl_certfile == str(tmp_path / "cert.pem")
    assert config.ssl_keyfile == str(tmp_path / "key.pem")
    assert config.ssl_ca_certs == str(tmp_path / "ca.pem")
    assert config.ssl_cert_reqs == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    "fields",
    [
        {"tls_certfile": "cert.pem"},  # a certificate without its key
        {"tls_client_ca": "ca.pem"},  # mutual TLS without server TLS
    ],
)
def test_incomplete_tls_settings_are_refused(fields: dict[str, str]) -> None:
    """Half a TLS configuration is a configuration error, not a silent downgrade."""
    with pytest.raises(ValueError, match="tls"):
        ReceiverConfig(**fields)  # type: ignore[arg-type]
