"""Searches page through ``Bundle.link[next]`` verbatim, lazily, and return matches only."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx
import pytest
import respx

from fhirbridge.errors import FhirError
from fhirbridge.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"
# Opaque next links as real servers write them: page tokens with %-escapes, '=' padding,
# repeated keys, a different path than the search, and a semicolon.
PAGE_2 = f"{BASE}?_getpages=9f1c%2Fa%2B%3D%3D&_getpagesoffset=2&_count=2&_bundletype=searchset"
PAGE_3 = f"{BASE}/Encounter/_search/page;token=Zm9v%7Cbar?_sort=-date&_sort=_id&cursor=a%20b"


def bundle(ids: list[str], next_url: str | None = None, included: int = 0) -> dict[str, Any]:
    """A searchset Bundle with Encounter matches and ``included`` Patient includes."""
    entries: list[dict[str, Any]] = [
        {"resource": {"resourceType": "Encounter", "id": i}, "search": {"mode": "match"}}
        for i in ids
    ]
    entries += [
        {"resource": {"resourceType": "Patient", "id": f"p{n}"}, "search": {"mode": "include"}}
        for n in range(included)
    ]
    entries.append(
        {
            "resource": {"resourceType": "OperationOutcome", "issue": []},
            "search": {"mode": "outcome"},
        }
    )
    links = [{"relation": "self", "url": f"{BASE}/Encounter"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


@pytest.fixture
def three_pages(router: respx.MockRouter) -> list[respx.Route]:
    """Three pages of Encounters (e1..e5) with includes, linked by opaque next URLs."""
    first = router.get(f"{BASE}/Encounter").respond(
        200, json=bundle(["e1", "e2"], PAGE_2, included=2)
    )
    second = router.get(PAGE_2).respond(200, json=bundle(["e3", "e4"], PAGE_3, included=1))
    third = router.get(PAGE_3).respond(200, json=bundle(["e5"]))
    return [first, second, third]


async def test_search_follows_next_links_across_three_pages(
    client: FhirClient, three_pages: list[respx.Route]
) -> None:
    """Every match on every page comes back exactly once, in server order."""
    found = await client.search_all("Encounter", {"_count": 2, "status": "finished"})

    assert [r["id"] for r in found] == ["e1", "e2", "e3", "e4", "e5"]
    assert [route.call_count for route in three_pages] == [1, 1, 1]


async def test_next_links_are_requested_verbatim(
    client: FhirClient, router: respx.MockRouter, three_pages: list[respx.Route]
) -> None:
    """The next URLs go on the wire byte for byte: not re-encoded, re-ordered or re-based."""
    await client.search_all("Encounter", {"_count": 2})

    sent = [str(call.request.url) for call in router.calls]
    assert sent[1:] == [PAGE_2, PAGE_3]


async def test_first_request_passes_count_and_params(
    client: FhirClient, three_pages: list[respx.Route]
) -> None:
    """``_count`` and the search parameters go on the first request's query string."""
    await client.search_all("Encounter", {"_count": 2, "status": "finished"})

    params = three_pages[0].calls.last.request.url.params
    assert params["_count"] == "2"
    assert params["status"] == "finished"


async def test_included_and_outcome_entries_are_skipped(
    client: FhirClient, three_pages: list[respx.Route]
) -> None:
    """``search.mode`` include and outcome entries are not yielded as matches."""
    found = await client.search_all("Encounter")

    assert {r["resourceType"] for r in found} == {"Encounter"}


async def test_paging_is_lazy(client: FhirClient, three_pages: list[respx.Route]) -> None:
    """A consumer that stops on page one never causes page two to be fetched."""
    seen = []
    async with aclosing(client.search("Encounter", {"_count": 2})) as matches:  # type: ignore[type-var]
        async for resource in matches:
            seen.append(resource["id"])
            if len(seen) == 2:
                break

    assert seen == ["e1", "e2"]
    assert [route.call_count for route in three_pages] == [1, 0, 0]


async def test_pages_yields_bundles_with_date(client: FhirClient, router: respx.MockRouter) -> None:
    """``pages`` yields each Bundle with the server's Date header (for polling watermarks)."""
    date = "Tue, 03 Mar 2026 10:00:00 GMT"
    router.get(f"{BASE}/Encounter").respond(200, json=bundle(["e1"]), headers={"Date": date})

    pages = [page async for page in client.pages("Encounter")]

    assert len(pages) == 1
    assert pages[0].date == date
    assert pages[0].next_url is None


async def test_next_link_to_another_server_is_refused(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A next link off the base URL is not followed, so credentials never leave the server."""
    router.get(f"{BASE}/Encounter").respond(
        200, json=bundle(["e1"], "https://evil.example.net/fhir?page=2")
    )
    foreign = router.get(host="evil.example.net").respond(200, json=bundle(["x"]))

    with pytest.raises(FhirError, match=r"evil\.example\.net"):
        await client.search_all("Encounter")
    assert foreign.call_count == 0


async def test_empty_searchset_yields_nothing(client: FhirClient, router: respx.MockRouter) -> None:
    """A Bundle with no entry and no next link is an empty search, in one request."""
    route = router.get(f"{BASE}/Encounter").respond(
        200, json={"resourceType": "Bundle", "type": "searchset", "total": 0}
    )

    assert await client.search_all("Encounter") == []
    assert route.call_count == 1


def test_opaque_urls_survive_httpx_parsing() -> None:
    """Guard for the verbatim test: httpx itself keeps these already-encoded URLs unchanged."""
    for url in (PAGE_2, PAGE_3):
        assert str(httpx.URL(url)) == url
