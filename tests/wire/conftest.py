"""Fixtures for wire tests: a respx router as the client's transport, and a recording sleep.

Every client built here talks only to ``router`` (an unmocked request fails the test) and
waits through ``sleep``, which records the delay in ``waits`` and returns at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RetryPolicy
from tests.wire._client import BASE, ClientFactory, Sleep


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router; requests it has no route for raise instead of passing through."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


@pytest.fixture
def waits() -> list[float]:
    """The delays the client asked to sleep, in order."""
    return []


@pytest.fixture
def sleep(waits: list[float]) -> Sleep:
    """An async sleep that records the delay and does not wait."""

    async def record(seconds: float) -> None:
        waits.append(seconds)

    return record


@pytest.fixture
def policy() -> RetryPolicy:
    """A deterministic retry policy: 4 attempts, 0.5 s doubling, no jitter."""
    return RetryPolicy(attempts=4, initial=0.5, max_backoff=30.0, max_elapsed=120.0, jitter=0.0)


@pytest.fixture
async def make_client(
    router: respx.MockRouter, sleep: Sleep, policy: RetryPolicy
) -> AsyncIterator[ClientFactory]:
    """Build FhirClients on ``router`` with the recording sleep; closed after the test."""
    made: list[FhirClient] = []

    def build(base_url: str = BASE, **kwargs: Any) -> FhirClient:
        kwargs.setdefault("retry", policy)
        kwargs.setdefault("sleep", sleep)
        kwargs.setdefault("transport", httpx.MockTransport(router.async_handler))
        client = FhirClient(base_url, **kwargs)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


@pytest.fixture
def client(make_client: ClientFactory) -> FhirClient:
    """A FhirClient on ``BASE`` with no auth and the default test policy."""
    return make_client()
