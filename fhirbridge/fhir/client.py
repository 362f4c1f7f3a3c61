"""The FHIR REST client every stage uses.

One async implementation over ``httpx.AsyncClient``; :class:`SyncFhirClient` wraps it for
scripts. Reads return plain JSON dicts (fast); writes accept dicts or ``fhir.resources``
models. Errors are mapped once, here, to :mod:`fhirbridge.errors`.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog

from fhirbridge.clock import Clock, SystemClock
from fhirbridge.errors import (
    AuthError,
    FhirError,
    FhirTimeoutError,
    InvalidResource,
    MultipleMatches,
    RateLimited,
    ResourceNotFound,
    ServerError,
    TransportError,
    VersionConflict,
    issues_from_outcome,
)
from fhirbridge.fhir.auth import Auth, NoAuth
from fhirbridge.fhir.retry import (
    PAUSE_STATUSES,
    RETRY_STATUSES,
    RequestLimiter,
    RetryPolicy,
    RetrySignal,
    parse_retry_after,
)

__all__ = ["FHIR_JSON", "FhirClient", "Page", "SyncFhirClient", "WriteResult", "to_json_dict"]

FHIR_JSON = "application/fhir+json"
log = structlog.get_logger(__name__)
T = TypeVar("T")


def to_json_dict(resource: Any) -> dict[str, Any]:
    """A FHIR resource as a JSON dict, from a dict or a ``fhir.resources``/pydantic model."""
    if isinstance(resource, Mapping):
        return dict(resource)
    dump = getattr(resource, "model_dump", None)
    if callable(dump):
        data = dump(mode="json", exclude_none=True, by_alias=True)
        if isinstance(data, dict):
            return data
    raise TypeError(f"not a FHIR resource: {type(resource).__name__}")


def version_etag(version_id: str) -> str:
    """The weak ETag FHIR uses for a version: ``W/"3"``."""
    return f'W/"{version_id}"'


def etag_version(etag: str | None) -> str | None:
    """The version id inside an ETag (``W/"3"`` -> ``3``)."""
    if not etag:
        return None
    text = etag.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"') or None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a create or update returned.

    ``created`` is False when a conditional create found the resource already there.
    ``resource`` is the body the server sent back (may be empty with ``Prefer:
    return=minimal``); ``location`` is the Location header, if any.
    """

    status: int
    resource: dict[str, Any]
    location: str | None
    version_id: str | None

    @property
    def created(self) -> bool:
        """True when the server made a new resource (201)."""
        return self.status == 201

    @property
    def id(self) -> str | None:
        """The logical id, from the body or the Location header."""
        rid = self.resource.get("id")
        if rid:
            return str(rid)
        if self.location:
            parts = urlsplit(self.location).path.split("/")
            if "_history" in parts:
                parts = parts[: parts.index("_history")]
            return parts[-1] or None
        return None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a search or history: the Bundle and the server's Date header."""

    bundle: dict[str, Any]
    date: str | None

    @property
    def resources(self) -> list[dict[str, Any]]:
        """The entries' resources, skipping included and outcome entries."""
        found = []
        for entry in self.bundle.get("entry") or ():
            mode = (entry.get("search") or {}).get("mode", "match")
            resource = entry.get("resource")
            if resource and mode == "match":
                found.append(resource)
        return found

    @property
    def next_url(self) -> str | None:
        """The ``next`` link, verbatim."""
        for link in self.bundle.get("link") or ():
            if link.get("relation") == "next" and link.get("url"):
                return str(link["url"])
        return None


_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTML_TITLE = re.compile(r"<title[^>]*>([^<]*)</title>", re.IGNORECASE)


def _error_text(response: httpx.Response) -> tuple[str, Any]:
    """A short description of an error body, and the parsed JSON if it was JSON."""
    content_type = response.headers.get("content-type", "")
    raw = response.content
    if raw:
        try:
            return "", json.loads(raw)
        except ValueError:
            pass
    if not raw:
        return "with an empty body", None
    kind = content_type.split(";")[0].strip().lower() or "unknown"
    text = raw[:4096].decode("utf-8", "replace")
    if kind in _HTML_TYPES or text.lstrip()[:5].lower() in ("<!doc", "<html"):
        # an HTML error page: its title at most, never the markup or a traceback in it
        title = _HTML_TITLE.search(text)
        if not title:
            return f"with a {kind} body, not an OperationOutcome", None
        text = title.group(1)
    snippet = " ".join(text[:300].split())
    return f"with a {kind} body, not an OperationOutcome: {snippet[:160]!r}", None


def _classify(
    response: httpx.Response, method: str, url: str, headers: Mapping[str, str]
) -> ServerError:
    status = response.status_code
    description, body = _error_text(response)
    issues = issues_from_outcome(body)
    outcome = body if issues else None
    kwargs: dict[str, Any] = {
        "status": status,
        "method": method,
        "url": url,
        "issues": issues,
        "outcome": outcome,
    }
    message = f"the server answered {description}" if description else None
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status in (404, 410):
        if urlsplit(url).path.rstrip("/").endswith("/metadata"):
            base = _where(url)[: -len("/metadata")]
            message = f"no FHIR server answers at {base}: check the path of fhir.base_url"
        return ResourceNotFound(message, **kwargs)
    if status == 409:
        return VersionConflict(message, **kwargs)
    if status == 412:
        lowered = {k.lower() for k in headers}
        conditional_update = method == "PUT" and "?" in url
        if "if-none-exist" in lowered or (conditional_update and "if-match" not in lowered):
            return MultipleMatches(message, **kwargs)
        return VersionConflict(message, **kwargs)
    if status in (400, 422):
        return InvalidResource(message, **kwargs)
    if status in (429, 503):
        return RateLimited(message, **kwargs)
    return ServerError(message or "the FHIR server answered with an error", **kwargs)


TLS_HINT = (
    "the server's TLS certificate is not trusted: set fhir.verify_tls to the path of a CA "
    "bundle (PEM) that signs it, or fix the certificate; it was not retried"
)


def _where(url: str) -> str:
    """``scheme://host:port/path`` of ``url``: never its query (it may carry PHI)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _certificate_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failed TLS certificate verification."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "certificate verify failed" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _transport_error(exc: httpx.HTTPError, method: str, url: str) -> TransportError:
    """One httpx failure without an HTTP answer, as a TransportError naming the URL."""
    where = _where(url)
    if _certificate_failure(exc):
        return TransportError(
            f"cannot reach the FHIR server at {where}: {TLS_HINT}", method=method, url=url
        )
    return TransportError(
        f"cannot reach the FHIR server at {where}: {type(exc).__name__}: {exc}",
        method=method,
        url=url,
    )


class FhirClient:
    """An async FHIR R4 REST client.

    >>> async with FhirClient("https://ehr.example.org/fhir") as fhir:
    ...     patient = await fhir.read("Patient", "123")
    ...     async for enc in fhir.search("Encounter", {"patient": "Patient/123"}):
    ...         print(enc["id"])

    ``transport`` is the test seam (``httpx.MockTransport`` or respx); ``sleep`` is what
    retries wait with (tests record instead of waiting); ``clock`` is what a ``Retry-After``
    HTTP-date is measured from (the system clock unless given). ``limiter`` paces every request
    (shared by all concurrent callers): a 429/503 with ``Retry-After`` pauses them all, and
    its ``rate`` caps requests per second.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str | ssl.SSLContext = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        limiter: RequestLimiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter or RequestLimiter(sleep=sleep)
        self.auth: Auth = auth or NoAuth()
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock: Clock = clock or SystemClock()
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=timeout, transport=transport, verify=verify, follow_redirects=False
        )
        self._headers = {"Accept": FHIR_JSON, **(headers or {})}
        self._capabilities: dict[str, Any] | None = None
        self._capabilities_lock = asyncio.Lock()

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (when the client owns them)."""
        if self._own_http:
            await self._http.aclose()

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` (already absolute URLs pass through)."""
        if path.startswith(("http://", "https://")):
            return path
        if not path.strip("/"):
            return self.base_url
        return f"{self.base_url}/{path.lstrip('/')}"

    @property
    def clock(self) -> Clock:
        """What this client measures time from (a ``Retry-After`` HTTP-date, for one)."""
        return self._clock

    def owns(self, url: str) -> bool:
        """Whether ``url`` is on this client's server (scheme, host, port and base path)."""
        base, other = urlsplit(self.base_url), urlsplit(url)
        return (
            base.scheme == other.scheme
            and base.netloc == other.netloc
            and (other.path + "/").startswith(base.path.rstrip("/") + "/")
        )

    # -- the one request loop ------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one request with auth, retries and error mapping; return a 2xx/3xx response.

        ``idempotent`` defaults to True for every method but POST; callers say True for a
        conditional create, a transaction or a search by POST.
        """
        url = self.url(path)
        safe = idempotent if idempotent is not None else method != "POST"
        extra = dict(headers or {})
        content = None
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            extra.setdefault("Content-Type", FHIR_JSON)
        resource_type = _resource_type(url, self.base_url)
        try:
            return await self._attempts(method, url, params, content, extra, safe, resource_type)
        except RetrySignal as signal:
            # the retries are spent: raise the last failure, chained to its httpx cause
            raise signal.error from signal.__cause__

    async def _attempts(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        extra: dict[str, str],
        safe: bool,
        resource_type: str,
    ) -> httpx.Response:
        attempt = 0
        refreshed = False
        paused_by_us = False
        controller = self.retry.controller(self._sleep)
        async for try_ in controller:
            with try_:
                attempt += 1
                await self.limiter.acquire(honour_pause=not paused_by_us)
                paused_by_us = False
                started = time.perf_counter()
                auth_headers = await self.auth.headers(self._http)
                try:
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        content=content,
                        headers={**self._headers, **auth_headers, **extra},
                    )
                except httpx.TimeoutException as exc:
                    error: FhirError = FhirTimeoutError(
                        f"no answer in time from {_where(url)} ({method} {resource_type}): "
                        f"{type(exc).__name__}",
                        method=method,
                        url=url,
                    )
                    _log_attempt(method, resource_type, None, started, attempt)
                    connect_phase = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                    if safe or connect_phase:
                        raise RetrySignal(error) from exc
                    raise error from exc
                except httpx.HTTPError as exc:
                    error = _transport_error(exc, method, url)
                    _log_attempt(method, resource_type, None, started, attempt)
                    if _certificate_failure(exc):
                        raise error from exc  # a retry gets the same certificate
                    if safe or isinstance(exc, httpx.ConnectError):
                        raise RetrySignal(error) from exc
                    raise error from exc
                _log_attempt(method, resource_type, response.status_code, started, attempt)
                if response.status_code < 400:
                    return response
                failure = _classify(response, method, url, extra)
                if response.status_code == 401 and self.auth.refreshable and not refreshed:
                    refreshed = True
                    self.auth.invalidate()
                    raise RetrySignal(failure, retry_after=0.0)
                if response.status_code in RETRY_STATUSES and safe:
                    retry_after = parse_retry_after(
                        response.headers.get("retry-after"), now=self._clock.now()
                    )
                    if retry_after is not None and response.status_code in PAUSE_STATUSES:
                        # every lane waits, not only this request (which waits in its retry)
                        self.limiter.pause(min(retry_after, self.retry.max_retry_after))
                        paused_by_us = True
                    raise RetrySignal(failure, retry_after)
                raise failure
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def _send(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return await self.request(*args, **kwargs)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        return _body(response)

    # -- reads ---------------------------------------------------------------------------
    async def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement, fetched once per client."""
        async with self._capabilities_lock:
            if self._capabilities is None:
                self._capabilities = await self._json("GET", "metadata")
        return self._capabilities

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``GET`` any path under the base (or an absolute URL) and return its JSON body."""
        return await self._json("GET", path, params=params)

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET [base]/[type]/[id]``."""
        return await self._json("GET", f"{resource_type}/{resource_id}")

    async def read_reference(self, reference: str) -> dict[str, Any]:
        """Read a relative reference such as ``Patient/123`` (or an absolute URL on this server)."""
        if reference.startswith(("http://", "https://")) and not self.owns(reference):
            raise FhirError(f"refusing to fetch {reference!r}: it is not on {self.base_url}")
        return await self._json("GET", reference)

    async def vread(self, resource_type: str, resource_id: str, version_id: str) -> dict[str, Any]:
        """``GET [base]/[type]/[id]/_history/[vid]``."""
        return await self._json("GET", f"{resource_type}/{resource_id}/_history/{version_id}")

    async def pages(
        self, path: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Page]:
        """Pages of a search or history, following ``next`` links verbatim, lazily."""
        response = await self._send("GET", path, params=params)
        while True:
            page = Page(_body(response), response.headers.get("date"))
            yield page
            next_url = page.next_url
            if not next_url:
                return
            if next_url.startswith(("http://", "https://")) and not self.owns(next_url):
                # our credentials go with every request: never send them to another server
                other = urlsplit(next_url)
                raise FhirError(
                    f"refusing to follow a next link to {other.scheme}://{other.netloc}"
                    f"{other.path}: it is not on {self.base_url}",
                    method="GET",
                    url=next_url,
                )
            response = await self._send("GET", next_url)

    async def search(
        self, resource_type: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching resource, page by page (``_count`` sets the page size)."""
        async for page in self.pages(resource_type, params):
            for resource in page.resources:
                yield resource

    async def search_all(
        self, resource_type: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every matching resource as a list."""
        return [r async for r in self.search(resource_type, params)]

    async def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: str | None = None,
        count: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Versions from ``_history`` at system, type or instance level (deletes included as
        entries without a resource are skipped)."""
        path = "_history"
        if resource_type and resource_id:
            path = f"{resource_type}/{resource_id}/_history"
        elif resource_type:
            path = f"{resource_type}/_history"
        params: dict[str, Any] = {}
        if since:
            params["_since"] = since
        if count:
            params["_count"] = count
        async for page in self.pages(path, params):
            for entry in page.bundle.get("entry") or ():
                if entry.get("resource"):
                    yield entry["resource"]

    # -- writes --------------------------------------------------------------------------
    async def create(self, resource: Any, *, if_none_exist: str | None = None) -> WriteResult:
        """``POST [base]/[type]``; with ``if_none_exist`` a conditional create (safe to retry).

        A conditional create that finds one match returns it with ``created`` False; several
        matches raise :class:`MultipleMatches`.
        """
        body = to_json_dict(resource)
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = await self._send(
            "POST",
            body["resourceType"],
            json_body=body,
            headers=headers,
            idempotent=bool(if_none_exist),
        )
        return _write_result(response)

    async def update(self, resource: Any, *, if_match: str | None = None) -> WriteResult:
        """``PUT [base]/[type]/[id]``; ``if_match`` is a version id for a versioned update.

        A stale version raises :class:`VersionConflict`.
        """
        body = to_json_dict(resource)
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match if if_match.startswith("W/") else version_etag(if_match)
        response = await self._send(
            "PUT", f"{body['resourceType']}/{body['id']}", json_body=body, headers=headers
        )
        return _write_result(response)

    async def conditional_update(self, resource: Any, query: str) -> WriteResult:
        """``PUT [base]/[type]?query``: update the single match, or create when none."""
        body = to_json_dict(resource)
        response = await self._send(
            "PUT",
            f"{body['resourceType']}?{query}",
            json_body=body,
            headers={"Prefer": "return=representation"},
        )
        return _write_result(response)

    async def delete(self, resource_type: str, resource_id: str) -> None:
        """``DELETE [base]/[type]/[id]``."""
        await self._send("DELETE", f"{resource_type}/{resource_id}")

    async def transaction(self, bundle: Any) -> dict[str, Any]:
        """POST a transaction or batch Bundle; returns the response Bundle.

        A transaction is all-or-nothing, so it is retried; check each entry's
        ``response.status`` of a batch yourself.
        """
        body = to_json_dict(bundle)
        if body.get("type") not in ("transaction", "batch"):
            raise ValueError("Bundle.type must be transaction or batch")
        return await self._json("POST", "", json_body=body, idempotent=True)

    async def operation(
        self, path: str, parameters: Mapping[str, Any] | None = None, *, method: str = "POST"
    ) -> dict[str, Any]:
        """Invoke an operation such as ``Subscription/1/$status``."""
        if method == "GET":
            return await self._json("GET", path, params=parameters)
        return await self._json("POST", path, json_body=parameters or {}, idempotent=True)


def _resource_type(url: str, base_url: str) -> str:
    """The first path segment after the base: the resource type (never ids or query)."""
    path = urlsplit(url).path
    base_path = urlsplit(base_url).path.rstrip("/")
    if path.startswith(base_path):
        path = path[len(base_path) :]
    first = path.strip("/").split("/", 1)[0]
    return first or "(base)"


def _log_attempt(
    method: str, resource_type: str, status: int | None, started: float, attempt: int
) -> None:
    log.debug(
        "fhir_request",
        method=method,
        resource_type=resource_type,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        attempt=attempt,
    )


def _body(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise FhirError(
            f"the server sent a non-JSON body for {response.request.method} "
            f"{response.request.url.path} "
            f"({response.headers.get('content-type', 'no content type')})",
            method=response.request.method,
            url=str(response.request.url),
        ) from exc
    if not isinstance(data, dict):
        raise FhirError("the server sent JSON that is not a FHIR resource")
    return data


def _write_result(response: httpx.Response) -> WriteResult:
    body = _body(response)
    version = etag_version(response.headers.get("etag"))
    if version is None:
        version = (body.get("meta") or {}).get("versionId")
    return WriteResult(
        status=response.status_code,
        resource=body,
        location=response.headers.get("location") or response.headers.get("content-location"),
        version_id=str(version) if version else None,
    )


class SyncFhirClient:
    """A blocking wrapper around :class:`FhirClient` for scripts and notebooks.

    It owns a private event loop; do not use it from inside a running loop.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = FhirClient(base_url, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def __enter__(self) -> SyncFhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close connections and the private loop."""
        self._run(self._client.aclose())
        self._loop.close()

    async def _collect(self, iterator: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
        return [item async for item in iterator]

    def capabilities(self) -> dict[str, Any]:
        """See :meth:`FhirClient.capabilities`."""
        return self._run(self._client.capabilities())

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """See :meth:`FhirClient.read`."""
        return self._run(self._client.read(resource_type, resource_id))

    def search(
        self, resource_type: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every match as a list (see :meth:`FhirClient.search`)."""
        return self._run(self._collect(self._client.search(resource_type, params)))

    def create(self, resource: Any, *, if_none_exist: str | None = None) -> WriteResult:
        """See :meth:`FhirClient.create`."""
        return self._run(self._client.create(resource, if_none_exist=if_none_exist))

    def update(self, resource: Any, *, if_match: str | None = None) -> WriteResult:
        """See :meth:`FhirClient.update`."""
        return self._run(self._client.update(resource, if_match=if_match))

    def transaction(self, bundle: Any) -> dict[str, Any]:
        """See :meth:`FhirClient.transaction`."""
        return self._run(self._client.transaction(bundle))
