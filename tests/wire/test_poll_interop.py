"""Polling and writes against a server that compares exact instants, pages without totals,
mints UUID version ids and puts no version in Location (the Medplum-like stand-in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import respx

from fhirbridge.fhir.client import FhirClient
from fhirbridge.sources.poll import Poller, format_instant
from fhirbridge.store import MemoryStore
from fhirbridge.testing.builders import encounter
from tests.wire._client import ClientFactory
from tests.wire._medplum import BASE, MedplumLike


@pytest.fixture
def medplum(router: respx.MockRouter) -> MedplumLike:
    """The stand-in server on its host."""
    server = MedplumLike()
    router.route(host="medplum.example.org").mock(side_effect=server.handle)
    return server


@pytest.fixture
def client(make_client: ClientFactory, medplum: MedplumLike) -> FhirClient:
    """A client on the stand-in."""
    return make_client(BASE)


@pytest.mark.parametrize(
    ("precision", "text"),
    [
        ("second", "2026-03-01T10:00:10Z"),  # floored: every server takes it
        ("millisecond", "2026-03-01T10:00:10.148Z"),  # where the profile says so
    ],
)
def test_format_instant_floors_to_the_precision(precision: str, text: str) -> None:
    """Instants are floored (never rounded up past a version) to the precision asked."""
    moment = datetime(2026, 3, 1, 10, 0, 10, 148900, tzinfo=UTC)
    assert format_instant(moment, precision) == text  # type: ignore[arg-type]


@pytest.mark.parametrize("precision", ["second", "millisecond"])
async def test_a_version_in_the_same_second_as_the_mark_is_not_lost(
    client: FhirClient, medplum: MedplumLike, precision: str
) -> None:
    """Watermarks keep milliseconds; a version stamped later in the same second as the mark
    is found by the next poll, whatever precision the search sends, with no Bundle.total."""
    store = MemoryStore()
    poller = Poller(
        client,
        store,
        server="mp",
        types=["Encounter"],
        overlap=timedelta(0),
        precision=precision,  # type: ignore[arg-type]
    )
    medplum._store("Encounter", encounter("e1"))
    start = medplum.now - timedelta(minutes=1)

    first = await poller.poll(start)
    mark = store.watermark("mp", "Encounter")
    medplum._store("Encounter", encounter("e2"))  # 137 ms later: the same second
    second = await poller.poll(start)

    assert first.new == 1 and second.new == 1
    assert mark is not None and "." in mark  # millisecond watermark
    sent = [p for m, p in medplum.requests if m == "GET" and p == "Encounter"]
    assert len(sent) == 2


async def test_minute_precision_is_never_sent(client: FhirClient, medplum: MedplumLike) -> None:
    """That server answers 400 to minute precision; the poller always sends seconds or more."""
    poller = Poller(client, MemoryStore(), server="mp", types=["Encounter"])
    stats = await poller.poll(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    assert stats.pages == 1


async def test_a_versioned_reference_without_history_in_location(
    client: FhirClient, medplum: MedplumLike
) -> None:
    """Location is `Type/id` with no `/_history/vid`: the version id (a UUID) comes from the
    ETag, so the writer can still point Provenance at `Type/id/_history/vid`."""
    result = await client.create({"resourceType": "Task", "status": "requested", "intent": "order"})

    assert result.location is not None and "_history" not in result.location
    assert result.version_id is not None and not result.version_id.isdigit()
    assert result.version_id == medplum.resources[("Task", str(result.id))]["meta"]["versionId"]


async def test_type_level_history_is_not_needed(client: FhirClient, medplum: MedplumLike) -> None:
    """Type-level _history answers 404 there; polling never asks for it."""
    poller = Poller(client, MemoryStore(), server="mp", types=["Encounter", "Task"])
    await poller.poll(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    assert not any("_history" in path for _, path in medplum.requests)
