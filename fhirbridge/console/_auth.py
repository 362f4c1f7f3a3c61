"""Who may use the console: the receiver's shared secret, presented as the API presents it
(``Authorization: Bearer <secret>`` or ``X-Fhirbridge-Secret``), or a browser session made
by posting that secret to the login form.

A session is a cookie ``{expiry}.{HMAC(secret, expiry)}`` (HttpOnly, SameSite=Strict, Secure
over HTTPS): it names nobody and changes with the secret. A form that acts (replay) also
carries ``HMAC(secret, cookie)`` as its CSRF token. Mutual TLS, when configured, is enforced
by the TLS server before any of this runs. ``secret`` None turns the check off (only behind
a proxy that authenticates), as for the receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["COOKIE", "SESSION_SECONDS", "ConsoleAuth"]

COOKIE = "fhirbridge_console"
SESSION_SECONDS = 8 * 3600


class ConsoleAuth:
    """Checks a request's credentials and issues browser sessions."""

    def __init__(
        self,
        secret: str | None,
        *,
        clock: Callable[[], float] = time.time,
        session_seconds: int = SESSION_SECONDS,
    ) -> None:
        self.secret = secret.encode() if secret is not None else None
        self.clock = clock
        self.session_seconds = session_seconds

    def _mac(self, text: str) -> str:
        assert self.secret is not None
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def secret_matches(self, given: str) -> bool:
        """Whether ``given`` is the secret (constant time)."""
        return self.secret is None or hmac.compare_digest(given.encode(), self.secret)

    def _header(self, request: Request) -> str | None:
        given = request.headers.get("x-fhirbridge-secret")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                given = token.strip()
        return given

    def _session_valid(self, cookie: str | None) -> bool:
        if not cookie or self.secret is None:
            return False
        expiry, _, mac = cookie.partition(".")
        if not expiry.isdigit() or int(expiry) < self.clock():
            return False
        return hmac.compare_digest(mac, self._mac(f"session|{expiry}"))

    def identify(self, request: Request) -> str | None:
        """How the request authenticated (``secret``, ``session``, ``open``), or None."""
        if self.secret is None:
            return "open"
        given = self._header(request)
        if given is not None:
            return "secret" if self.secret_matches(given) else None
        return "session" if self._session_valid(request.cookies.get(COOKIE)) else None

    def start_session(self, response: Response, *, secure: bool) -> None:
        """Set a new session cookie on ``response``."""
        if self.secret is None:
            return
        expiry = str(int(self.clock()) + self.session_seconds)
        response.set_cookie(
            COOKIE,
            f"{expiry}.{self._mac(f'session|{expiry}')}",
            max_age=self.session_seconds,
            httponly=True,
            samesite="strict",
            secure=secure,
            path="/",
        )

    def csrf_token(self, request: Request) -> str:
        """The token a form of this session must send back ("" when none is needed)."""
        cookie = request.cookies.get(COOKIE)
        if self.secret is None or not cookie:
            return ""
        return self._mac(f"csrf|{cookie}")

    def may_act(self, request: Request, form: Mapping[str, str]) -> bool:
        """Whether an action (a POST) may proceed: the secret in a header, or a valid
        session whose CSRF token came with the form (or the ``X-CSRF-Token`` header)."""
        how = self.identify(request)
        if how in ("open", "secret"):
            return True
        if how != "session":
            return False
        token = form.get("csrf") or request.headers.get("x-csrf-token") or ""
        return bool(token) and hmac.compare_digest(token, self.csrf_token(request))
