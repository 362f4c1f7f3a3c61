"""How the FHIR client authenticates: none, a static bearer token, HTTP basic, or SMART
Backend Services (``client_credentials`` with a ``private_key_jwt`` assertion).

Each is an :class:`Auth`: it gives the headers for a request and, when the server answers
401, may be asked to ``invalidate`` its credentials once so the request is retried with
fresh ones.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import httpx
import jwt

from fhirbridge.errors import AuthError, ConfigError, TransportError

__all__ = [
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "SmartBackendAuth",
    "missing_scopes",
    "scope_covers",
]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART v1 permission words as SMART v2 letters.
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}


def scope_covers(granted: Iterable[str], resource_type: str, letters: str) -> bool:
    """Whether the ``granted`` SMART scopes allow ``letters`` (v2: c, r, u, d, s) on
    ``resource_type`` at system level (``system/Task.cruds``, ``system/*.rs``, v1
    ``system/Task.read``, ``system/*.*``); each letter may come from a different scope."""
    allowed = ""
    for scope in granted:
        context, _, rest = scope.partition("/")
        if context != "system" or "." not in rest:
            continue
        rtype, _, permission = rest.partition(".")
        if rtype not in ("*", resource_type):
            continue
        permission = permission.split("?", 1)[0]
        allowed += _V1_PERMISSIONS.get(permission, permission)
    return all(letter in allowed for letter in letters)


def missing_scopes(granted: Iterable[str], needs: Mapping[str, str]) -> list[str]:
    """The ``system/{type}.{letters}`` scopes of ``needs`` (type -> letters) that ``granted``
    does not cover, e.g. ``["system/Subscription.cruds"]``."""
    have = list(granted)
    return [
        f"system/{t}.{letters}"
        for t, letters in needs.items()
        if not scope_covers(have, t, letters)
    ]


@runtime_checkable
class Auth(Protocol):
    """Extension point: supplies request headers; ``invalidate`` after a 401.

    ``refreshable`` says whether invalidating can produce different credentials (a static
    token cannot, so a 401 is final).
    """

    refreshable: bool

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """Headers to add to the next request."""

    def invalidate(self) -> None:
        """Forget cached credentials (the server refused them)."""


class NoAuth:
    """No credentials."""

    refreshable = False

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """No headers."""
        return {}

    def invalidate(self) -> None:
        """Nothing to forget."""


class BearerAuth:
    """A static bearer token."""

    refreshable = False

    def __init__(self, token: str) -> None:
        self._header = {"Authorization": f"Bearer {token}"}

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """``Authorization: Bearer <token>``."""
        return self._header

    def invalidate(self) -> None:
        """A static token cannot be refreshed."""

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class BasicAuth:
    """HTTP basic authentication."""

    refreshable = False

    def __init__(self, username: str, password: str) -> None:
        pair = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._header = {"Authorization": f"Basic {pair}"}
        self.username = username

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """``Authorization: Basic ...``."""
        return self._header

    def invalidate(self) -> None:
        """Static credentials cannot be refreshed."""

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=***)"


class SmartBackendAuth:
    """SMART Backend Services: a signed JWT assertion exchanged for a short-lived token.

    The token endpoint comes from ``token_url`` or is discovered at
    ``{fhir_base}/.well-known/smart-configuration``. The access token is cached until
    ``refresh_margin`` seconds before it expires; there are no refresh tokens, so a new
    assertion (with a new ``jti``) is signed each time.
    """

    refreshable = True

    def __init__(
        self,
        *,
        fhir_base: str,
        client_id: str,
        private_key: str,
        key_id: str,
        algorithm: str = "RS384",
        scopes: Sequence[str] = ("system/*.rs",),
        token_url: str | None = None,
        assertion_lifetime: int = 300,
        refresh_margin: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("RS384", "ES384"):
            raise ConfigError(f"fhir.auth.algorithm: {algorithm!r} is not RS384 or ES384")
        if assertion_lifetime > 300:
            raise ConfigError("fhir.auth.assertion_lifetime: at most 300 seconds is allowed")
        self.fhir_base = fhir_base.rstrip("/")
        self.client_id = client_id
        self.key_id = key_id
        self.algorithm = algorithm
        self.scopes = tuple(scopes)
        self.token_url = token_url
        self.assertion_lifetime = assertion_lifetime
        self.refresh_margin = refresh_margin
        self._private_key = private_key
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.granted_scope: str | None = None

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, key_id={self.key_id!r})"

    def assertion(self, audience: str) -> str:
        """A fresh client assertion JWT for ``audience`` (the token endpoint)."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "exp": now + self.assertion_lifetime,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id, "typ": "JWT"}
        try:
            return jwt.encode(claims, self._private_key, algorithm=self.algorithm, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigError(
                f"fhir.auth.private_key: cannot sign an {self.algorithm} assertion with it: {exc}"
            ) from exc

    async def _discover(self, http: httpx.AsyncClient) -> str:
        url = f"{self.fhir_base}/.well-known/smart-configuration"
        try:
            response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TransportError(
                f"SMART discovery at {url} failed: {type(exc).__name__}: {exc}",
                method="GET",
                url=url,
            ) from exc
        if response.status_code != 200:
            raise AuthError(
                "the server publishes no .well-known/smart-configuration: set fhir.auth.token_url",
                status=response.status_code,
                method="GET",
                url=url,
            )
        try:
            endpoint = response.json()["token_endpoint"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError(
                "smart-configuration has no token_endpoint: set fhir.auth.token_url",
                status=response.status_code,
                method="GET",
                url=url,
            ) from exc
        return str(endpoint)

    async def _fetch(self, http: httpx.AsyncClient) -> None:
        if self.token_url is None:
            self.token_url = await self._discover(http)
        form = {
            "grant_type": "client_credentials",
            "scope": " ".join(self.scopes),
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.assertion(self.token_url),
        }
        try:
            response = await http.post(self.token_url, data=form)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"the token request to {self.token_url} failed: {type(exc).__name__}: {exc}",
                method="POST",
                url=self.token_url,
            ) from exc
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            reason = body.get("error_description") or body.get("error") or "no access_token"
            raise AuthError(
                f"the token endpoint refused the client assertion ({reason})",
                status=response.status_code,
                method="POST",
                url=self.token_url,
            )
        self._token = str(body["access_token"])
        lifetime = float(body.get("expires_in") or 300)
        self._expires_at = self._clock() + lifetime
        self.granted_scope = body.get("scope")

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """A bearer header with a valid access token, fetching one when needed."""
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self.refresh_margin:
                await self._fetch(http)
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        """Drop the cached token; the next request gets a new one."""
        self._token = None
        self._expires_at = 0.0
