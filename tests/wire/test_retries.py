"""When the client retries, how long it waits, and when it gives up.

The default test policy (see conftest) is 4 attempts, 0.5 s doubling, no jitter; ``waits``
holds what the client asked the injected ``sleep`` for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from fhirbridge.clock import FixedClock
from fhirbridge.errors import FhirTimeoutError, RateLimited, ServerError, TransportError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RetryPolicy
from fhirbridge.sources.bulk import BulkExport
from fhirbridge.testing import MemoryStore

BASE = "https://ehr.example.org/fhir"
PATIENT = {"resourceType": "Patient", "id": "1"}
TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def ok() -> httpx.Response:
    """A 200 with the test Patient."""
    return httpx.Response(200, json=PATIENT)


async def test_429_waits_retry_after_seconds(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """A 429 with ``Retry-After: 7`` waits exactly 7 s, then the retry succeeds."""
    route = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), ok()]
    )

    assert await client.read("Patient", "1") == PATIENT
    assert waits == [7.0]
    assert route.call_count == 2


async def test_429_waits_until_retry_after_http_date(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """A ``Retry-After`` HTTP-date 20 s after the client's clock waits exactly 20 s (the
    client measures the date from its own clock, not the machine's)."""
    now = datetime(2026, 3, 5, 12, 0, 0, tzinfo=UTC)
    client = make_client(clock=FixedClock(now))
    when = now + timedelta(seconds=20)
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)}),
            ok(),
        ]
    )

    await client.read("Patient", "1")

    assert waits == [20.0]


async def test_retry_after_is_capped(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """A server asking for an hour is waited on only ``max_retry_after`` seconds."""
    client = make_client(retry=RetryPolicy(max_retry_after=60.0, max_elapsed=600.0, jitter=0))
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "3600"}), ok()]
    )

    await client.read("Patient", "1")

    assert waits == [60.0]


async def test_503_storm_then_success(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """Three 503s then a 200: the read succeeds after backing off 0.5, 1 and 2 s."""
    route = router.get(f"{BASE}/Patient/1").mock(side_effect=[httpx.Response(503)] * 3 + [ok()])

    assert await client.read("Patient", "1") == PATIENT
    assert route.call_count == 4
    assert waits == [0.5, 1.0, 2.0]


async def test_503_storm_beyond_attempts_raises_rate_limited(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """When every attempt gets 503 the client raises RateLimited carrying the status."""
    route = router.get(f"{BASE}/Patient/1").respond(503)

    with pytest.raises(RateLimited) as caught:
        await client.read("Patient", "1")

    assert caught.value.status == 503
    assert route.call_count == 4
    assert len(waits) == 3


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_errors_are_retried(
    client: FhirClient, router: respx.MockRouter, status: int
) -> None:
    """502 and 504 from a proxy are transient: the read is retried and succeeds."""
    route = router.get(f"{BASE}/Patient/1").mock(side_effect=[httpx.Response(status), ok()])

    assert await client.read("Patient", "1") == PATIENT
    assert route.call_count == 2


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_errors_beyond_attempts_raise_server_error(
    client: FhirClient, router: respx.MockRouter, status: int
) -> None:
    """Spent retries on 502/504 raise a plain ServerError with the status (not RateLimited)."""
    router.get(f"{BASE}/Patient/1").respond(status)

    with pytest.raises(ServerError) as caught:
        await client.read("Patient", "1")

    assert type(caught.value) is ServerError
    assert caught.value.status == status


async def test_connect_error_is_retried(client: FhirClient, router: respx.MockRouter) -> None:
    """A refused connection is retried; the next attempt's answer is returned."""
    route = router.get(f"{BASE}/Patient/1").mock(side_effect=[httpx.ConnectError, ok()])

    assert await client.read("Patient", "1") == PATIENT
    assert route.call_count == 2


async def test_connect_errors_beyond_attempts_raise_transport_error(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """Spent retries on connect errors raise TransportError, chained to the httpx error."""
    route = router.get(f"{BASE}/Patient/1").mock(side_effect=httpx.ConnectError)

    with pytest.raises(TransportError) as caught:
        await client.read("Patient", "1")

    assert not isinstance(caught.value, FhirTimeoutError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert route.call_count == 4
    assert waits == [0.5, 1.0, 2.0]


async def test_read_timeout_on_get_is_retried_then_raises_timeout(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A GET that times out reading is retried; spent retries raise FhirTimeoutError."""
    route = router.get(f"{BASE}/Patient/1").mock(side_effect=httpx.ReadTimeout)

    with pytest.raises(FhirTimeoutError) as caught:
        await client.read("Patient", "1")

    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert route.call_count == 4


async def test_plain_create_is_not_retried_on_503(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """A plain POST create is not repeated on 503: a retry could create a duplicate."""
    route = router.post(f"{BASE}/Task").respond(503)

    with pytest.raises(RateLimited):
        await client.create(TASK)

    assert route.call_count == 1
    assert waits == []


async def test_plain_create_is_not_retried_on_read_timeout(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """A POST create that timed out after sending may have been applied: exactly one try."""
    route = router.post(f"{BASE}/Task").mock(side_effect=httpx.ReadTimeout)

    with pytest.raises(FhirTimeoutError):
        await client.create(TASK)

    assert route.call_count == 1
    assert waits == []


async def test_plain_create_is_retried_when_the_connection_was_never_made(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A POST create whose connection was refused never reached the server: it is retried."""
    route = router.post(f"{BASE}/Task").mock(
        side_effect=[httpx.ConnectError, httpx.Response(201, json={**TASK, "id": "t1"})]
    )

    result = await client.create(TASK)

    assert result.created is True
    assert route.call_count == 2


async def test_conditional_create_is_retried_on_503(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A conditional create is idempotent (If-None-Exist), so a 503 is retried."""
    route = router.post(f"{BASE}/Task").mock(
        side_effect=[httpx.Response(503), httpx.Response(201, json={**TASK, "id": "t1"})]
    )

    result = await client.create(TASK, if_none_exist="identifier=urn:sys|abc")

    assert result.created is True
    assert route.call_count == 2
    assert all(c.request.headers["if-none-exist"] for c in route.calls)


async def test_put_is_retried_on_503(client: FhirClient, router: respx.MockRouter) -> None:
    """An update (PUT) is idempotent, so a 503 is retried with the same If-Match."""
    route = router.put(f"{BASE}/Task/t1").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={**TASK, "id": "t1"})]
    )

    await client.update({**TASK, "id": "t1"}, if_match="3")

    assert route.call_count == 2
    assert [c.request.headers["if-match"] for c in route.calls] == ['W/"3"', 'W/"3"']


async def test_transaction_is_retried_on_503(client: FhirClient, router: respx.MockRouter) -> None:
    """A transaction is all-or-nothing, so a 503 (nothing applied) is retried."""
    route = router.post(BASE).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={"resourceType": "Bundle"})]
    )

    await client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})

    assert route.call_count == 2


async def test_max_elapsed_gives_up_before_a_too_long_retry_after(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """A Retry-After that would overrun ``max_elapsed`` is not waited on: give up at once."""
    client = make_client(retry=RetryPolicy(attempts=10, max_elapsed=10.0, jitter=0))
    route = router.get(f"{BASE}/Patient/1").respond(429, headers={"Retry-After": "30"})

    with pytest.raises(RateLimited) as caught:
        await client.read("Patient", "1")

    assert caught.value.status == 429
    assert route.call_count == 1
    assert waits == []


async def test_max_elapsed_stops_backoff_before_attempts_run_out(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """With 10 attempts but ``max_elapsed`` 5 s, the 8 s fourth wait is never slept."""
    policy = RetryPolicy(attempts=10, initial=1.0, max_elapsed=5.0, jitter=0)
    client = make_client(retry=policy)
    route = router.get(f"{BASE}/Patient/1").respond(503)

    with pytest.raises(RateLimited):
        await client.read("Patient", "1")

    assert waits == [1.0, 2.0, 4.0]
    assert route.call_count == 4


async def test_backoff_doubles_up_to_max_backoff(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """Without Retry-After and with jitter 0, waits double from ``initial`` and cap."""
    policy = RetryPolicy(attempts=7, initial=0.5, max_backoff=5.0, max_elapsed=600.0, jitter=0)
    client = make_client(retry=policy)
    router.get(f"{BASE}/Patient/1").respond(502)

    with pytest.raises(ServerError):
        await client.read("Patient", "1")

    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


async def test_jitter_stays_within_its_bound(
    make_client: Callable[..., FhirClient], router: respx.MockRouter, waits: list[float]
) -> None:
    """Each jittered wait lies between the exponential base and base + ``jitter``."""
    policy = RetryPolicy(attempts=5, initial=1.0, max_backoff=60.0, max_elapsed=600.0, jitter=0.5)
    client = make_client(retry=policy)
    router.get(f"{BASE}/Patient/1").respond(503)

    with pytest.raises(RateLimited):
        await client.read("Patient", "1")

    bases = [1.0, 2.0, 4.0, 8.0]
    assert len(waits) == len(bases)
    assert all(base <= w <= base + 0.5 for base, w in zip(bases, waits, strict=True))


async def test_non_retryable_status_is_raised_at_once(
    client: FhirClient, router: respx.MockRouter, waits: list[float]
) -> None:
    """A 500 is not in the retry set: one request, no wait."""
    route = router.get(f"{BASE}/Patient/1").respond(500)

    with pytest.raises(ServerError):
        await client.read("Patient", "1")

    assert route.call_count == 1
    assert waits == []


async def test_public_request_raises_fhirbridge_errors_after_retries(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """``FhirClient.request`` itself (not only the helpers) ends in a fhirbridge error."""
    router.get(f"{BASE}/Patient/1").respond(503)

    with pytest.raises(RateLimited):
        await client.request("GET", "Patient/1")


async def test_bulk_status_retry_after_http_date_is_measured_from_the_client_clock(
    make_client: Callable[..., FhirClient], router: respx.MockRouter
) -> None:
    """A bulk export status poll answering 202 with a ``Retry-After`` HTTP-date 12 s after
    the client's clock waits exactly 12 s before asking again."""
    now = datetime(2026, 3, 5, 12, 0, 0, tzinfo=UTC)
    client = make_client(clock=FixedClock(now))
    status = f"{BASE}/$export-status/1"
    router.get(f"{BASE}/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": status})
    )
    when = format_datetime(now + timedelta(seconds=12), usegmt=True)
    router.get(status).mock(
        side_effect=[
            httpx.Response(202, headers={"Retry-After": when}),
            httpx.Response(200, json={"transactionTime": "2026-03-05T12:00:00Z", "output": []}),
        ]
    )
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    store = MemoryStore()
    await BulkExport(client, store, server="ehr", types=["Encounter"], sleep=record).run()
    assert pauses == [12.0]
