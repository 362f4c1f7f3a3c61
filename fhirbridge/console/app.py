"""The operator console and the coordination report as an ASGI app (Starlette).

================================================ ============================================
``GET  /console``                                 the console page (feeds, journal, outbox,
                                                  dead letters, transitions, last hour)
``GET  /console/login`` ``POST /console/login``   a browser session from the shared secret
``POST /console/logout``                          end the session
``POST /console/dead-letters/{id}/replay``        replay one dead letter (form, CSRF token)
``POST /console/dead-letters/replay``             replay every dead letter (form, CSRF token)
``GET  /console/api/status``                      what the page shows, as JSON
``GET  /console/api/dead-letters``                dead letters (``?source=&q=``), as JSON
``POST /console/api/dead-letters/{id}/replay``    replay one, JSON answer
``POST /console/api/dead-letters/replay``         replay all, JSON answer
``GET  /report`` ``/report.json``                 the coordination report read from the server
``GET  /report/{measure}.csv``                    one measure's table (``summary.csv``: all)
================================================ ============================================

Every route but the login form needs the receiver's secret (``Authorization: Bearer`` or
``X-Fhirbridge-Secret``) or a session made with it; without, the pages answer 401 with the
login form and the API 401 JSON. A replay is recorded in the audit log (``console-replay``).
The report's query takes ``from``, ``to`` (dates), ``owner`` and ``organization``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fhirbridge.clock import Clock, SystemClock
from fhirbridge.console._auth import COOKIE, ConsoleAuth
from fhirbridge.console._status import Sampler, dead_letter_rows, gather_status
from fhirbridge.engine import Bridge
from fhirbridge.errors import FhirBridgeError
from fhirbridge.report.charts import bar_chart
from fhirbridge.report.fetch import default_period, read_report_data
from fhirbridge.report.html import render_html, stylesheet
from fhirbridge.report.measures import compute
from fhirbridge.report.model import CoordinationReport, Scope
from fhirbridge.report.tables import measure_csv, summary_csv

if TYPE_CHECKING:
    from fhirbridge.console._receiving import ReceiverView
    from fhirbridge.sources.hl7v2 import MllpListener

__all__ = ["console_app"]

log = structlog.get_logger(__name__)
MAX_FORM = 4096
Handler = Callable[[Request], Awaitable[Response]]


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("fhirbridge.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (bounded), without a multipart dependency."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            break
    return dict(parse_qsl(body[:MAX_FORM].decode("utf-8", "replace")))


class _Console:
    def __init__(
        self,
        bridge: Bridge,
        *,
        auth: ConsoleAuth,
        receiver: ReceiverView | None,
        hl7: MllpListener | None,
        show_names: bool,
        clock: Clock,
    ) -> None:
        self.bridge = bridge
        self.auth = auth
        self.receiver = receiver
        self.hl7 = hl7
        self.show_names = show_names
        self.clock = clock
        self.sampler = Sampler()
        self.lock = asyncio.Lock()
        self.drawing = asyncio.Lock()

    # -- plumbing ------------------------------------------------------------------------
    @staticmethod
    def _root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        html = (
            _templates()
            .get_template(name)
            .render(root=self._root(request), style=stylesheet(), **context)
        )
        return HTMLResponse(html, status_code=status)

    def _login(self, request: Request, status: int = 401, error: str = "") -> Response:
        return self._page(
            request,
            "login.html",
            status=status,
            error=error,
            next=request.query_params.get("next") or f"{self._root(request)}/console",
        )

    def guarded(self, handler: Handler, *, api: bool = False) -> Handler:
        async def guard(request: Request) -> Response:
            if self.auth.identify(request) is None:
                log.info("console_refused", path=request.url.path)
                if api:
                    return JSONResponse(
                        {"error": "missing or wrong secret"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                return self._login(request)
            return await handler(request)

        return guard

    # -- session ---------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if self.auth.identify(request) is not None:
            return RedirectResponse(f"{self._root(request)}/console", status_code=303)
        return self._login(request, status=200)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        if not self.auth.secret_matches(form.get("secret", "")):
            log.info("console_login_refused")
            return self._login(request, error="That is not the secret.")
        target = form.get("next", "")
        if not target.startswith("/") or target.startswith("//"):
            target = f"{self._root(request)}/console"
        response = RedirectResponse(target, status_code=303)
        self.auth.start_session(response, secure=request.url.scheme == "https")
        self.bridge.store.audit("console-login", "console", {})
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(f"{self._root(request)}/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- console ---------------------------------------------------------------------------
    async def _status(self) -> dict[str, Any]:
        now = self.clock.now()
        self.sampler.take(self.bridge, now)
        return await gather_status(
            self.bridge, now=now, receiver=self.receiver, hl7=self.hl7, show_names=self.show_names
        )

    async def console(self, request: Request) -> Response:
        status = await self._status()
        source = request.query_params.get("source") or None
        text = request.query_params.get("q") or None
        letters = dead_letter_rows(self.bridge.store.dead_letters(), source=source, text=text)
        charts = [
            (name, title, bar_chart(f"metric-{name}", points, unit="count", title=title))
            for name, title in (
                ("pending", "Journal: versions pending"),
                ("outbox", "Outbox: writes pending"),
                ("dead_letters", "Dead letters"),
            )
            if (points := self.sampler.series(name))
        ]
        return self._page(
            request,
            "console.html",
            status_data=status,
            letters=letters,
            sources=sorted({d["source"] for d in status["dead_letters"]}),
            source=source or "",
            q=text or "",
            flash=request.query_params.get("flash", ""),
            csrf=self.auth.csrf_token(request),
            charts=charts,
            show_names=self.show_names,
        )

    async def api_status(self, request: Request) -> Response:
        return JSONResponse(await self._status())

    async def api_dead_letters(self, request: Request) -> Response:
        rows = dead_letter_rows(
            self.bridge.store.dead_letters(),
            source=request.query_params.get("source") or None,
            text=request.query_params.get("q") or None,
        )
        return JSONResponse({"dead_letters": rows})

    async def _replay(self, request: Request, only: int | None) -> dict[str, Any] | None:
        form = await _form(request)
        if not self.auth.may_act(request, form):
            return None
        known = {d.id for d in self.bridge.store.dead_letters()}
        if only is not None and only not in known:
            return {"replayed": 0, "error": f"no dead letter {only} waits for a replay"}
        async with self.lock:
            count = self.bridge.replay(only)
            self.bridge.store.audit(
                "console-replay",
                f"dead-letter/{only}" if only is not None else "dead-letter/*",
                {"replayed": count, "auth": self.auth.identify(request)},
            )
            log.info("console_replay", dead_letter=only, replayed=count)
            if self.receiver is not None:
                self.receiver.worker.kick()  # the serving worker processes and writes them
                return {"replayed": count, "processing": "queued"}
            stats = await self.bridge.process()
            written = await self.bridge.drain() if self.bridge.writer is not None else None
        return {
            "replayed": count,
            "processed": stats.processed,
            "created": written.created if written is not None else 0,
            "dead_again": written.dead if written is not None else 0,
        }

    def _only(self, request: Request) -> int | None:
        raw = request.path_params.get("letter")
        return int(raw) if raw is not None else None

    async def replay_form(self, request: Request) -> Response:
        try:
            outcome = await self._replay(request, self._only(request))
        except FhirBridgeError as exc:
            outcome = {"replayed": 0, "error": str(exc)}
        if outcome is None:
            return self._login(request, status=403, error="The replay needs a fresh session.")
        flash = outcome.get("error") or (
            f"Replayed {outcome['replayed']}"
            + (
                f"; created {outcome['created']} Task(s), dead again {outcome['dead_again']}"
                if "created" in outcome
                else "; the worker is processing them"
            )
        )
        query = urlencode({"flash": flash})
        return RedirectResponse(
            f"{self._root(request)}/console?{query}#dead-letters", status_code=303
        )

    async def replay_api(self, request: Request) -> Response:
        try:
            outcome = await self._replay(request, self._only(request))
        except FhirBridgeError as exc:
            return JSONResponse({"replayed": 0, "error": str(exc)}, status_code=502)
        if outcome is None:
            return JSONResponse({"error": "a session needs its CSRF token"}, status_code=403)
        return JSONResponse(outcome, status_code=404 if "error" in outcome else 200)

    # -- report ----------------------------------------------------------------------------
    async def _report(self, request: Request) -> CoordinationReport | Response:
        client = self.bridge.client
        if client is None:
            return JSONResponse({"error": "the report needs a FHIR client"}, status_code=503)
        calendar = self.bridge.calendar
        as_of = calendar.local_date(self.clock.now())
        try:
            start, end = (
                date.fromisoformat(v) if (v := request.query_params.get(k)) else None
                for k in ("from", "to")
            )
        except ValueError:
            return JSONResponse({"error": "from and to are dates (YYYY-MM-DD)"}, 400)
        period = default_period(as_of, start, end)
        scope = Scope(
            owner=request.query_params.get("owner") or None,
            organization=request.query_params.get("organization") or None,
        )
        try:
            data = await read_report_data(client, period)
        except FhirBridgeError as exc:
            return JSONResponse({"error": f"the FHIR server: {exc}"}, status_code=502)
        # the measures and the charts are CPU work: off the event loop the receiver shares
        return await asyncio.to_thread(
            compute,
            data,
            period=period,
            as_of=as_of,
            calendar=calendar,
            codes=self.bridge.rules.codes,
            scope=scope,
        )

    async def report_html(self, request: Request) -> Response:
        report = await self._report(request)
        if isinstance(report, Response):
            return report
        async with self.drawing:  # matplotlib's rc settings are process-wide: one at a time
            page = await asyncio.to_thread(
                render_html,
                report,
                generated=self.clock.now(),
                server=self.bridge.config.fhir.base_url,
            )
        return HTMLResponse(page)

    async def report_json(self, request: Request) -> Response:
        report = await self._report(request)
        return report if isinstance(report, Response) else JSONResponse(report.as_dict())

    async def report_csv(self, request: Request) -> Response:
        report = await self._report(request)
        if isinstance(report, Response):
            return report
        name = request.path_params["measure"]
        if name == "summary":
            text = summary_csv(report)
        else:
            try:
                text = measure_csv(report.measure(name))
            except KeyError:
                return JSONResponse({"error": f"no measure {name!r} in this report"}, 404)
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )


def console_app(
    bridge: Bridge,
    *,
    secret: str | None,
    receiver: ReceiverView | None = None,
    hl7: MllpListener | None = None,
    show_names: bool = False,
    clock: Clock | None = None,
) -> Starlette:
    """The console and report app for ``bridge`` (its store, client and configuration).

    ``secret`` is the receiver's shared secret (None turns authentication off: only behind
    a proxy or mutual TLS that authenticates). ``receiver``, when the console runs inside
    ``serve``, adds the subscriptions' event numbers and the notification lag, and replays
    hand their work to its worker; without it, a replay processes and writes at once.
    ``hl7`` adds an MLLP listener's figures. ``show_names`` shows patient names beside their
    references (PHI on the screen). Mount it anywhere: links follow the mount's root path.
    """
    console = _Console(
        bridge,
        auth=ConsoleAuth(secret),
        receiver=receiver,
        hl7=hl7,
        show_names=show_names,
        clock=clock or SystemClock(),
    )
    guard = console.guarded
    routes = [
        Route("/console/login", console.login_form, methods=["GET"]),
        Route("/console/login", console.login, methods=["POST"]),
        Route("/console/logout", console.logout, methods=["POST"]),
        Route("/console", guard(console.console), methods=["GET"]),
        Route("/console/api/status", guard(console.api_status, api=True), methods=["GET"]),
        Route(
            "/console/api/dead-letters", guard(console.api_dead_letters, api=True), methods=["GET"]
        ),
        Route(
            "/console/api/dead-letters/replay",
            guard(console.replay_api, api=True),
            methods=["POST"],
        ),
        Route(
            "/console/api/dead-letters/{letter:int}/replay",
            guard(console.replay_api, api=True),
            methods=["POST"],
        ),
        Route("/console/dead-letters/replay", guard(console.replay_form), methods=["POST"]),
        Route(
            "/console/dead-letters/{letter:int}/replay",
            guard(console.replay_form),
            methods=["POST"],
        ),
        Route("/report", guard(console.report_html), methods=["GET"]),
        Route("/report.json", guard(console.report_json, api=True), methods=["GET"]),
        Route("/report/{measure}.csv", guard(console.report_csv, api=True), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    return app
