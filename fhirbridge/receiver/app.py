"""The notification receiver as an ASGI app (Starlette).

Routes, under one prefix (``/notify`` by default; the Subscription endpoint is
``receiver.public_url + prefix``):

========================================= ==============================================
``PUT  {prefix}/{type}/{id}``             R4 rest-hook with payload: the full resource
``POST {prefix}``                         empty body: R4 rest-hook without payload (a poll
                                          since the watermark follows); a Backport history
                                          Bundle (handshake, heartbeat, event-notification,
                                          query-status); a Da Vinci message Bundle; or one
                                          resource
``POST {prefix}/$process-message``        Da Vinci notification message Bundle
``POST {prefix}/azure`` ``/google``         Azure Event Grid and Google Pub/Sub push events
                                          (:mod:`fhirbridge.receiver._cloud`)
``GET  /healthz`` ``/readyz`` ``/metrics`` liveness, readiness (journal and server), Prometheus
========================================= ==============================================

Every notification must carry the shared secret (``Authorization: Bearer <secret>`` or
``X-Fhirbridge-Secret``), else 401. A body over ``max_body`` bytes gets 413, one not sent
within ``body_timeout`` seconds 408, a ``Content-Type`` that is not JSON 415; a body that is
not JSON within the :class:`JsonLimits` (depth, values, string length, storable Unicode), not
FHIR, or names a URL off the configured server gets 400, an id-only focus the server does not
hold 422, and both are kept as dead letters. 200 is answered only after what the notification
carries is in the journal; if the journal (or, for id-only content, the server) is
unavailable, 503 with ``Retry-After`` asks the sender to retry. Every other answer, an unknown
path or method included, is an OperationOutcome (``application/fhir+json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fhirbridge.engine import Bridge
from fhirbridge.errors import FhirError, StoreError
from fhirbridge.receiver._bounds import JsonLimits, load_json
from fhirbridge.receiver._cloud import CloudRoutes
from fhirbridge.receiver._medplum import is_medplum_delivery, medplum_delivery
from fhirbridge.receiver._notify import (
    NotificationError,
    is_topic_notification,
    parse_message,
    parse_resource,
    parse_topic_notification,
)
from fhirbridge.receiver._receiver import OnInactive, Receiver, ReceiverUnavailable
from fhirbridge.subscriptions import DEFAULT_PREFIX

__all__ = ["DEFAULT_PREFIX", "create_app", "outcome"]

log = structlog.get_logger(__name__)
FHIR_JSON = "application/fhir+json"
#: Failures of a parser's own code on input it did not foresee: still the input's fault.
_UNFORESEEN = (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError)


class _TooLarge(Exception):
    pass


@dataclass(slots=True)
class _Call:
    request: Request
    body: bytes
    kind: str = "unknown"
    data: Any = None  # the body's JSON, read within the limits (None when empty)


def outcome_json(code: str, text: str, *, severity: str = "error") -> bytes:
    """An OperationOutcome with one issue, as compact JSON bytes."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def outcome(
    status: int, code: str, text: str, *, severity: str = "error", **headers: str
) -> Response:
    """An HTTP answer whose body is an OperationOutcome (``application/fhir+json``)."""
    return Response(
        outcome_json(code, text, severity=severity),
        status_code=status,
        media_type=FHIR_JSON,
        headers=headers or None,
    )


_HTTP_CODES = {404: "not-found", 405: "not-supported"}


def _storable(text: str) -> str:
    """``text`` without what a journal's text column refuses (NUL, lone surrogates)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) as OperationOutcomes."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        text = f"no such endpoint: {request.url.path}"
    elif status == 405:
        text = f"{request.method} is not allowed on {request.url.path}"
    else:
        text = exc.detail if isinstance(exc, HTTPException) else "internal error"
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return outcome(status, _HTTP_CODES.get(status, "processing"), text, **headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug, answered as an OperationOutcome (the traceback goes to the log only)."""
    log.error("receiver_internal_error", path=request.url.path, error=type(exc).__name__)
    return outcome(500, "exception", f"internal error ({type(exc).__name__})")


class _Http:
    """The HTTP side: authenticate, bound, parse, hand over to the :class:`Receiver`."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        secret: str | None,
        max_body: int,
        readiness_ttl: float,
        limits: JsonLimits,
        body_timeout: float,
    ) -> None:
        self.receiver = receiver
        self.secret = secret.encode() if secret is not None else None
        self.max_body = max_body
        self.readiness_ttl = readiness_ttl
        self.limits = limits
        self.body_timeout = body_timeout
        self._server_check: tuple[float, str] | None = None
        #: HMAC keys of signed deliveries (subscriptions[].signing_secret)
        self.signing_keys = [
            key
            for spec in receiver.bridge.config.subscriptions
            if (key := spec.resolved_signing_secret())
        ]

    def _authorized(self, request: Request) -> bool:
        if self.secret is None:
            return True
        given = request.headers.get("x-fhirbridge-secret")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return False
            given = token.strip()
        return hmac.compare_digest(given.encode(), self.secret)

    async def _read(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            raise _TooLarge
        body = bytearray()
        async with asyncio.timeout(self.body_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body:
                    raise _TooLarge
        return bytes(body)

    @staticmethod
    def _json_content(request: Request) -> bool:
        """Whether the ``Content-Type`` (when given) is a JSON media type."""
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        return not media or "json" in media

    async def _serve(self, request: Request, handle: Callable[[_Call], Awaitable[str]]) -> Response:
        count = self.receiver.metrics.received
        if not self._authorized(request):
            count("unknown", "unauthorized")
            return outcome(
                401,
                "login",
                "missing or wrong notification secret",
                **{"WWW-Authenticate": "Bearer"},
            )
        self.receiver.inflight += 1
        try:
            return await self._handle(request, handle)
        finally:
            self.receiver.inflight -= 1

    async def _handle(
        self, request: Request, handle: Callable[[_Call], Awaitable[str]]
    ) -> Response:
        count = self.receiver.metrics.received
        try:
            call = _Call(request, await self._read(request))
        except _TooLarge:
            count("unknown", "too_large")
            return outcome(413, "too-costly", f"the body is larger than {self.max_body} bytes")
        except TimeoutError:
            count("unknown", "timeout")
            text = f"the body did not arrive within {self.body_timeout:g} s"
            return outcome(408, "timeout", text, Connection="close")
        except ClientDisconnect:
            count("unknown", "disconnected")
            return outcome(400, "incomplete", "the sender left before the body was complete")
        if call.body.strip() and not self._json_content(request):
            count("unknown", "unsupported_media_type")
            media = request.headers.get("content-type", "")[:80]
            return outcome(415, "not-supported", f"{media!r} is not FHIR JSON")
        try:
            if call.body.strip():
                call.data = load_json(call.body, self.limits)
            done = await handle(call)
        except NotificationError as exc:
            count(call.kind, "invalid")
            self._dead_letter(call, exc.message)
            code = "not-found" if exc.status == 422 else "invalid"
            return outcome(exc.status, code, exc.message)
        except _UNFORESEEN as exc:  # a shape no parser rule foresaw: refuse, keep, log
            count(call.kind, "invalid")
            reason = f"the notification cannot be read ({type(exc).__name__})"
            log.warning("notification_unreadable", kind=call.kind, error=type(exc).__name__)
            self._dead_letter(call, reason)
            return outcome(400, "invalid", reason)
        except (ReceiverUnavailable, StoreError) as exc:
            count(call.kind, "unavailable")
            log.warning("notification_not_durable", kind=call.kind, error=type(exc).__name__)
            return outcome(503, "transient", "not journalled; retry later", **{"Retry-After": "5"})
        count(call.kind, "accepted")
        return outcome(200, "informational", done, severity="information")

    def _dead_letter(self, call: _Call, reason: str) -> None:
        reference = _storable(f"{call.request.method} {call.request.url.path}"[:500])
        try:
            self.receiver.bridge.store.dead_letter(
                "notification", reference, _storable(reason), call.body
            )
        except StoreError as exc:
            log.error("dead_letter_failed", error=str(exc))

    # -- notification routes -----------------------------------------------------------
    async def put_resource(self, request: Request) -> Response:
        """``PUT {prefix}/{type}/{id}``: an R4 rest-hook notification with its resource."""

        async def handle(call: _Call) -> str:
            call.kind = "rest-hook"
            named = (request.path_params["type"], request.path_params["id"])
            parse_resource(call.data, *named)
            (version,) = self.receiver.versions([call.body])
            await self.receiver.journal.append([version])
            return "journalled"

        return await self._serve(request, handle)

    async def post(self, request: Request) -> Response:
        """``POST {prefix}``: empty, Backport Bundle, message Bundle or one resource."""

        async def handle(call: _Call) -> str:
            if is_medplum_delivery(request.headers):  # POST of the bare resource
                call.kind, done = await medplum_delivery(
                    self.receiver, call.body, request.headers, self.signing_keys
                )
                return done
            if not call.body.strip():
                call.kind = "rest-hook-empty"
                self.receiver.catch_up("empty-notification")
                return "a poll since the watermark is scheduled"
            data = call.data
            if is_topic_notification(data):
                note = parse_topic_notification(data, self.receiver.owns)
                call.kind = note.status.type
                await self.receiver.topic(note)
                return f"{note.status.type} received"
            if isinstance(data, Mapping) and data.get("resourceType") == "Bundle":
                if data.get("type") == "message":
                    return await self._message(call, data)
                raise NotificationError(
                    f"a Bundle of type {data.get('type')!r} is not a notification"
                )
            call.kind = "rest-hook"
            parse_resource(data)
            await self.receiver.accept([call.body])  # the bytes as they came
            return "journalled"

        return await self._serve(request, handle)

    async def process_message(self, request: Request) -> Response:
        """``POST {prefix}/$process-message``: a Da Vinci notification message."""

        async def handle(call: _Call) -> str:
            return await self._message(call, call.data)

        return await self._serve(request, handle)

    async def _message(self, call: _Call, data: Any) -> str:
        call.kind = "message"
        if not isinstance(data, Mapping):
            raise NotificationError("the body is not a FHIR Bundle")
        message = parse_message(data, self.receiver.owns)
        await self.receiver.accept(list(message.resources))
        return f"{message.event} journalled"

    # -- operations routes -------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the journal answers and the FHIR server's metadata is reachable (503
        with an OperationOutcome naming each failing check, else 200)."""
        checks: dict[str, str] = {}
        try:
            self.receiver.bridge.store.outbox_depth()
            checks["journal"] = "ok"
        except Exception as exc:
            checks["journal"] = f"failing ({type(exc).__name__})"
        checks["server"] = await self._server()
        failing = {k: v for k, v in checks.items() if v not in ("ok", "not configured")}
        if not failing:
            return JSONResponse({"status": "ready", "checks": checks})
        issues = [
            {"severity": "error", "code": "transient", "diagnostics": f"{name}: {state}"}
            for name, state in failing.items()
        ]
        body = {"resourceType": "OperationOutcome", "issue": issues}
        return Response(json.dumps(body), status_code=503, media_type=FHIR_JSON)

    async def _server(self) -> str:
        client = self.receiver.bridge.client
        if client is None:
            return "not configured"
        now = time.monotonic()
        if self._server_check is not None and self._server_check[0] > now:
            return self._server_check[1]
        try:
            await asyncio.wait_for(client.get("metadata"), timeout=3.0)
            result = "ok"
        except (FhirError, TimeoutError) as exc:
            result = f"unreachable ({type(exc).__name__})"
        self._server_check = (now + self.readiness_ttl, result)
        return result

    async def metrics(self, request: Request) -> Response:
        """Prometheus exposition of this receiver's registry."""
        return Response(self.receiver.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    bridge: Bridge,
    *,
    secret: str | None,
    max_body: int,
    prefix: str = DEFAULT_PREFIX,
    heartbeats: Mapping[str, float] | None = None,
    poll_interval: float | None = None,
    gap_grace: float = 2.0,
    commit_window: float = 0.002,
    check_interval: float = 5.0,
    checkpoint_interval: float = 0.1,
    readiness_ttl: float = 5.0,
    on_inactive: OnInactive | None = None,
    clock: Callable[[], float] = time.monotonic,
    limits: JsonLimits | None = None,
    body_timeout: float = 30.0,
    max_subscriptions: int = 1000,
) -> Starlette:
    """The receiver app for ``bridge``; its :class:`Receiver` is ``app.state.receiver``.

    ``secret`` None turns authentication off (only behind a proxy that authenticates).
    ``heartbeats`` maps topic canonicals to heartbeat periods in seconds (default: the
    configured subscriptions'); a subscription silent for twice its period triggers a
    ``$status`` query and a catch-up. ``poll_interval`` also polls on a timer (and once at
    start). ``gap_grace`` is how long a hole in event numbers may wait for a late delivery
    before it counts as missed. ``commit_window`` is the group-commit window in seconds.
    ``on_inactive(subscription_id)`` is awaited when a subscription reports ``error``/``off``.
    ``checkpoint_interval`` is how often a thread checkpoints a SQLite journal's WAL, so the
    event loop's commits do not. ``clock`` (monotonic seconds) times heartbeats and the lag
    gauge. ``limits`` bound a body's JSON, ``body_timeout`` (seconds) its arrival;
    ``max_subscriptions`` bounds the subscriptions whose event numbers are tracked in memory.
    The worker starts with the app's lifespan and drains in-flight work when it ends.
    """
    receiver = Receiver(
        bridge,
        heartbeats=heartbeats,
        poll_interval=poll_interval,
        gap_grace=gap_grace,
        commit_window=commit_window,
        check_interval=check_interval,
        checkpoint_interval=checkpoint_interval,
        on_inactive=on_inactive,
        clock=clock,
        limits=limits,
        max_subscriptions=max_subscriptions,
    )
    http = _Http(
        receiver,
        secret=secret,
        max_body=max_body,
        readiness_ttl=readiness_ttl,
        limits=receiver.limits,
        body_timeout=body_timeout,
    )
    cloud = CloudRoutes(receiver, secret=secret, max_body=max_body)
    prefix = "/" + prefix.strip("/")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await receiver.start()
        try:
            yield
        finally:
            await receiver.stop()

    app = Starlette(
        routes=[
            Route("/healthz", http.healthz, methods=["GET"]),
            Route("/readyz", http.readyz, methods=["GET"]),
            Route("/metrics", http.metrics, methods=["GET"]),
            Route(f"{prefix}/$process-message", http.process_message, methods=["POST"]),
            Route(f"{prefix}/azure", cloud.event_grid, methods=["POST", "OPTIONS"]),
            Route(f"{prefix}/google", cloud.pubsub, methods=["POST"]),
            Route(prefix, http.post, methods=["POST"]),
            Route(prefix + "/{type}/{id}", http.put_resource, methods=["PUT"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.receiver = receiver
    if bridge.config.console.enabled:  # /console and /report, behind the same secret
        from fhirbridge.console import console_app

        console = console_app(
            bridge,
            secret=secret,
            receiver=receiver,
            show_names=bridge.config.console.show_names,
        )
        # the console's routes join the receiver's, so unknown paths and methods still get
        # the receiver's OperationOutcome answers
        app.router.routes.extend(console.routes)
        app.state.console = console.state.console
    return app
