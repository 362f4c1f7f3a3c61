"""HTTP answers and httpx failures become the errors in :mod:`fhirbridge.errors`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from fhirbridge.errors import (
    AuthError,
    FhirBridgeError,
    FhirError,
    FhirTimeoutError,
    InvalidResource,
    MultipleMatches,
    OutcomeIssue,
    ResourceNotFound,
    ServerError,
    TransportError,
    VersionConflict,
)
from fhirbridge.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"
TASK = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"}


def outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    """An OperationOutcome with ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, ResourceNotFound),  # no such resource
        (410, ResourceNotFound),  # deleted
        (401, AuthError),  # no or bad credentials
        (403, AuthError),  # credentials lack the scope
    ],
)
async def test_read_status_maps_to_error(
    client: FhirClient, router: respx.MockRouter, status: int, error: type[ServerError]
) -> None:
    """Read failures map by status to a ServerError subclass carrying status and method."""
    router.get(f"{BASE}/Patient/1").respond(
        status, json=outcome({"severity": "error", "code": "not-found"})
    )

    with pytest.raises(error) as caught:
        await client.read("Patient", "1")

    assert caught.value.status == status
    assert caught.value.method == "GET"
    assert isinstance(caught.value, FhirBridgeError)


async def test_409_on_update_is_version_conflict(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 409 (STU3-style or pessimistic locking) is a VersionConflict."""
    router.put(f"{BASE}/Task/t1").respond(409)

    with pytest.raises(VersionConflict):
        await client.update(TASK, if_match="3")


async def test_412_after_if_match_is_version_conflict(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 412 to a PUT with If-Match means a stale version: VersionConflict, not MultipleMatches."""
    router.put(f"{BASE}/Task/t1").respond(412)

    with pytest.raises(VersionConflict) as caught:
        await client.update(TASK, if_match="3")

    assert not isinstance(caught.value, MultipleMatches)
    assert caught.value.status == 412


async def test_412_on_if_none_exist_is_multiple_matches(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 412 to a conditional create means several resources matched: MultipleMatches."""
    router.post(f"{BASE}/Task").respond(412)

    with pytest.raises(MultipleMatches):
        await client.create(TASK, if_none_exist="identifier=urn:sys|abc")


async def test_412_on_conditional_update_is_multiple_matches(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 412 to ``PUT [type]?query`` means several resources matched: MultipleMatches."""
    router.put(f"{BASE}/Task", params={"identifier": "urn:sys|abc"}).respond(412)

    with pytest.raises(MultipleMatches):
        await client.conditional_update(TASK, "identifier=urn:sys|abc")


@pytest.mark.parametrize("status", [400, 422])
async def test_rejected_resource_carries_parsed_issues(
    client: FhirClient, router: respx.MockRouter, status: int
) -> None:
    """400/422 raise InvalidResource with the OperationOutcome issues parsed and in the text."""
    body = outcome(
        {
            "severity": "error",
            "code": "required",
            "diagnostics": "Task.intent: minimum required = 1, but only found 0",
            "expression": ["Task.intent"],
        },
        {"severity": "warning", "code": "business-rule", "details": {"text": "late"}},
    )
    router.post(f"{BASE}/Task").respond(status, json=body)

    with pytest.raises(InvalidResource) as caught:
        await client.create(TASK)

    error = caught.value
    assert error.status == status
    assert error.outcome == body
    assert error.issues == (
        OutcomeIssue(
            severity="error",
            code="required",
            text="Task.intent: minimum required = 1, but only found 0",
            expression=("Task.intent",),
        ),
        OutcomeIssue(severity="warning", code="business-rule", text="late"),
    )
    assert "minimum required = 1" in str(error)
    assert "Task.intent" in str(error)


TRACEBACK = (
    "<pre>Traceback (most recent call last):\n"
    '  File "/srv/app.py", line 12, in handle\n    raise RuntimeError("db down")\n'
    "RuntimeError: db down</pre>"
)


@pytest.mark.parametrize(
    ("page", "title"),
    [
        # a small framework error page: title, then the traceback
        (
            "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>"
            f"<body><h1>Internal Server Error</h1>{TRACEBACK}</body></html>",
            "500 Internal Server Error",
        ),
        # no title at all, the traceback straight after <html>
        (f"<html><body>{TRACEBACK}</body></html>", None),
        # a Tomcat-style page with a long style block
        (
            '<!doctype html><html lang="en"><head><title>HTTP Status 500 – Internal Server'
            " Error</title><style>body {font-family:Tahoma}" + "h1 {x:y} " * 60 + "</style>"
            f"</head><body><h1>HTTP Status 500</h1>{TRACEBACK}</body></html>",
            "HTTP Status 500 – Internal Server Error",
        ),
    ],
)
async def test_html_error_page_gives_a_short_server_error(
    client: FhirClient, router: respx.MockRouter, page: str, title: str | None
) -> None:
    """A 500 HTML page is a one-line ServerError naming text/html and the page title at
    most: never the markup or the traceback inside it."""
    router.get(f"{BASE}/Patient/1").respond(
        500, text=page, headers={"Content-Type": "text/html; charset=utf-8"}
    )

    with pytest.raises(ServerError) as caught:
        await client.read("Patient", "1")

    message = str(caught.value)
    assert type(caught.value) is ServerError
    assert caught.value.status == 500
    assert "text/html" in message
    assert "Traceback" not in message
    assert "db down" not in message
    assert "<" not in message
    assert "\n" not in message
    assert len(message) < 300
    if title:
        assert title in message


async def test_plain_text_error_keeps_a_snippet(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A proxy's text/plain 500 keeps its first words in the message, to say who failed."""
    router.get(f"{BASE}/Patient/1").respond(
        500,
        text="upstream connect error or disconnect/reset before headers",
        headers={"Content-Type": "text/plain"},
    )

    with pytest.raises(ServerError) as caught:
        await client.read("Patient", "1")

    assert "text/plain" in str(caught.value)
    assert "upstream connect error" in str(caught.value)


async def test_empty_error_body_is_described(client: FhirClient, router: respx.MockRouter) -> None:
    """An error with no body says so, rather than failing to parse it."""
    router.get(f"{BASE}/Patient/1").respond(500)

    with pytest.raises(ServerError, match="empty body"):
        await client.read("Patient", "1")


async def test_non_json_success_body_is_a_fhir_error(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 200 whose body is not JSON raises FhirError naming the path and content type."""
    router.get(f"{BASE}/Patient/1").respond(
        200, text="<html>login</html>", headers={"Content-Type": "text/html"}
    )

    with pytest.raises(FhirError) as caught:
        await client.read("Patient", "1")

    assert type(caught.value) is FhirError
    assert "GET /fhir/Patient/1 (text/html)" in str(caught.value)


async def test_json_that_is_not_a_resource_is_a_fhir_error(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 200 with a JSON array (not a resource object) raises FhirError."""
    router.get(f"{BASE}/Patient/1").respond(200, json=[1, 2])

    with pytest.raises(FhirError):
        await client.read("Patient", "1")


@pytest.mark.parametrize(
    "status", [400, 401, 403, 404, 405, 409, 410, 412, 415, 422, 429, 500, 501, 502, 503, 504]
)
async def test_every_error_status_is_a_fhirbridge_error(
    client: FhirClient, router: respx.MockRouter, status: int
) -> None:
    """Whatever the error status, the caller gets a ServerError (a FhirBridgeError)."""
    router.get(f"{BASE}/Patient/1").respond(status)

    with pytest.raises(ServerError) as caught:
        await client.read("Patient", "1")

    assert isinstance(caught.value, FhirBridgeError)
    assert caught.value.status == status


HTTPX_FAILURES = [
    httpx.ConnectError,  # connection refused, DNS, TLS handshake
    httpx.ReadError,  # connection reset mid-answer
    httpx.RemoteProtocolError,  # server closed without a response
    httpx.WriteError,  # reset while sending
    httpx.ReadTimeout,  # no answer in time
    httpx.ConnectTimeout,  # could not connect in time
    httpx.PoolTimeout,  # no free connection in time
]
TIMEOUTS = (httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout)


@pytest.mark.parametrize("failure", HTTPX_FAILURES)
async def test_no_httpx_exception_escapes_a_read(
    client: FhirClient, router: respx.MockRouter, failure: type[httpx.RequestError]
) -> None:
    """Each httpx failure of a GET becomes a TransportError (FhirTimeoutError for timeouts)."""
    router.get(f"{BASE}/Patient/1").mock(side_effect=failure)

    with pytest.raises(FhirBridgeError) as caught:
        await client.read("Patient", "1")

    expected = FhirTimeoutError if issubclass(failure, TIMEOUTS) else TransportError
    assert isinstance(caught.value, expected)
    assert isinstance(caught.value.__cause__, failure)


@pytest.mark.parametrize("failure", HTTPX_FAILURES)
async def test_no_httpx_exception_escapes_a_create(
    client: FhirClient, router: respx.MockRouter, failure: type[httpx.RequestError]
) -> None:
    """Each httpx failure of a plain POST create, retried or not, becomes a TransportError."""
    router.post(f"{BASE}/Task").mock(side_effect=failure)

    with pytest.raises(TransportError):
        await client.create(TASK)
