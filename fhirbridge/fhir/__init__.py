"""The FHIR REST client, its auth and retry policies, and what a server offers."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhirbridge.errors import ConfigError
from fhirbridge.fhir.auth import Auth, BasicAuth, BearerAuth, NoAuth, SmartBackendAuth
from fhirbridge.fhir.client import FhirClient, Page, SyncFhirClient, WriteResult, to_json_dict
from fhirbridge.fhir.invariants import check_invariants
from fhirbridge.fhir.probe import Finding, ServerProfile, server_profile
from fhirbridge.fhir.retry import RequestLimiter, RetryPolicy

if TYPE_CHECKING:
    from fhirbridge.config import FhirConfig

__all__ = [
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "FhirClient",
    "Finding",
    "NoAuth",
    "Page",
    "RequestLimiter",
    "RetryPolicy",
    "ServerProfile",
    "SmartBackendAuth",
    "SyncFhirClient",
    "WriteResult",
    "auth_from_config",
    "check_invariants",
    "client_from_config",
    "server_profile",
    "tls_verification",
    "to_json_dict",
]


def auth_from_config(config: FhirConfig) -> Auth:
    """The :class:`Auth` that ``fhir.auth`` describes."""
    auth = config.auth
    if auth.type == "bearer":
        return BearerAuth(auth.resolved_token() or "")
    if auth.type == "basic":
        return BasicAuth(auth.username or "", auth.resolved_password() or "")
    if auth.type == "smart":
        return SmartBackendAuth(
            fhir_base=config.base_url,
            client_id=auth.client_id or "",
            private_key=auth.resolved_private_key() or "",
            key_id=auth.key_id or "",
            algorithm=auth.algorithm,
            scopes=auth.scopes,
            token_url=auth.token_url,
        )
    return NoAuth()


def tls_verification(verify_tls: bool | str | Path) -> bool | ssl.SSLContext:
    """What httpx verifies with for ``fhir.verify_tls``: True (the system's trust store),
    False (nothing: only for a test server), or a context trusting the CA bundle at a path."""
    if isinstance(verify_tls, bool):
        return verify_tls
    try:
        return ssl.create_default_context(cafile=str(verify_tls))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"fhir.verify_tls: cannot load the CA bundle {verify_tls}: {exc}"
        ) from exc


def client_from_config(config: FhirConfig, **overrides: Any) -> FhirClient:
    """A :class:`FhirClient` for ``config`` (keyword overrides, e.g. ``transport``, win)."""
    retry = RetryPolicy(
        attempts=config.retry.attempts,
        initial=config.retry.initial,
        max_backoff=config.retry.max_backoff,
        max_elapsed=config.retry.max_elapsed,
    )
    options: dict[str, Any] = {
        "auth": auth_from_config(config),
        "timeout": config.timeout,
        "retry": retry,
        "verify": tls_verification(config.verify_tls),
        "limiter": RequestLimiter(config.max_requests_per_second),
    }
    options.update(overrides)
    return FhirClient(config.base_url, **options)
