"""The FHIR REST client, its auth and retry policies, and what a server offers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhirbridge.fhir.auth import Auth, BasicAuth, BearerAuth, NoAuth, SmartBackendAuth
from fhirbridge.fhir.client import FhirClient, Page, SyncFhirClient, WriteResult, to_json_dict
from fhirbridge.fhir.retry import RequestLimiter, RetryPolicy

if TYPE_CHECKING:
    from fhirbridge.config import FhirConfig

__all__ = [
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "FhirClient",
    "NoAuth",
    "Page",
    "RequestLimiter",
    "RetryPolicy",
    "SmartBackendAuth",
    "SyncFhirClient",
    "WriteResult",
    "auth_from_config",
    "client_from_config",
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
        "verify": config.verify_tls,
        "limiter": RequestLimiter(config.max_requests_per_second),
    }
    options.update(overrides)
    return FhirClient(config.base_url, **options)
