"""The operator console over HTTP (ASGI, in memory, no FHIR client): it refuses without the
secret, signs a browser in with it, lists dead letters with their reasons, and replays one
only with a session's CSRF token, recording the replay in the audit log."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.console import console_app
from fhirbridge.engine import Bridge
from fhirbridge.store import MemoryStore

SECRET = "console-s3cret"
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "meta": {"versionId": "1", "lastUpdated": "2026-11-21T10:00:00Z"},
    "status": "in-progress",
    "class": {"code": "IMP"},
    "subject": {"reference": "Patient/p1"},
}


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    """An offline engine (no FHIR client) on a memory journal holding two dead letters."""
    config = load_config(data={"fhir": {"base_url": "https://ehr.example.org/fhir"}})
    engine = Bridge(config, client=None, store=MemoryStore(), clock=FixedClock(NOW))
    engine.store.dead_letter(
        "notification",
        "PUT /notify/Encounter/e1",
        "server was down",
        json.dumps(ENCOUNTER).encode(),
    )
    engine.store.dead_letter("notification", "POST /notify", "not JSON", b"{oops")
    yield engine
    await engine.aclose()


def client_for(bridge: Bridge, secret: str | None = SECRET) -> httpx.AsyncClient:
    """An HTTP client talking to the console app in memory."""
    app = console_app(bridge, secret=secret, clock=FixedClock(NOW))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


async def test_refuses_without_the_secret(bridge: Bridge) -> None:
    """No credentials or a wrong bearer: the page answers 401 with the login form, the API
    401 JSON, and a replay changes nothing."""
    async with client_for(bridge) as http:
        page = await http.get("/console")
        assert page.status_code == 401 and 'name="secret"' in page.text
        assert "server was down" not in page.text
        wrong = await http.get("/console/api/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        replay = await http.post("/console/api/dead-letters/1/replay")
        assert replay.status_code == 401
        report = await http.get("/report")
        assert report.status_code == 401
    assert len(bridge.store.dead_letters()) == 2


async def test_bearer_secret_shows_dead_letters_and_filters_them(bridge: Bridge) -> None:
    """With the secret as a bearer token (as the API takes it): both dead letters with their
    reasons; the text filter keeps one; the JSON status carries the same rows."""
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with client_for(bridge) as http:
        page = await http.get("/console", headers=auth)
        assert page.status_code == 200
        assert "server was down" in page.text and "not JSON" in page.text
        assert "<script" not in page.text
        filtered = await http.get("/console", params={"q": "down"}, headers=auth)
        assert len(re.findall(r'id="dead-letter-\d+"', filtered.text)) == 1
        status = (await http.get("/console/api/status", headers=auth)).json()
        assert [d["reason"] for d in status["dead_letters"]] == ["not JSON", "server was down"]
        assert "payload" not in status["dead_letters"][0]
        assert status["outbox"] == {"pending": 0, "done": 0, "dead": 0}


async def test_session_replays_one_dead_letter_with_its_csrf_token(bridge: Bridge) -> None:
    """Signing in with the secret gives a session; a replay without the page's CSRF token is
    refused; with it, dead letter 1 (a resource) is journalled and processed and leaves the
    list, dead letter 2 stays; the audit log records the replay."""
    async with client_for(bridge) as http:
        bad = await http.post("/console/login", data={"secret": "guess"})
        assert bad.status_code == 401
        login = await http.post("/console/login", data={"secret": SECRET})
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        page = await http.get("/console")
        assert page.status_code == 200
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert token is not None
        forged = await http.post("/console/dead-letters/1/replay", data={"csrf": "0" * 64})
        assert forged.status_code == 403
        assert len(bridge.store.dead_letters()) == 2
        done = await http.post("/console/dead-letters/1/replay", data={"csrf": token.group(1)})
        assert done.status_code == 303 and "Replayed+1" in done.headers["location"]
        after = await http.get("/console")
        assert 'id="dead-letter-1"' not in after.text and 'id="dead-letter-2"' in after.text
    assert [d.id for d in bridge.store.dead_letters()] == [2]
    assert bridge.store.snapshot(bridge.server, "Encounter", "e1") is not None
    (audit,) = [a for a in bridge.store.audit_log() if a["action"] == "console-replay"]
    assert audit["reference"] == "dead-letter/1" and audit["detail"]["replayed"] == 1


async def test_api_replay_with_the_secret_needs_no_csrf_and_404s_unknown(bridge: Bridge) -> None:
    """The JSON API with the bearer secret replays at once; an id that waits for no replay
    gets 404."""
    auth = {"X-Fhirbridge-Secret": SECRET}
    async with client_for(bridge) as http:
        one = await http.post("/console/api/dead-letters/1/replay", headers=auth)
        assert one.status_code == 200 and one.json()["replayed"] == 1
        again = await http.post("/console/api/dead-letters/1/replay", headers=auth)
        assert again.status_code == 404


async def test_report_needs_a_fhir_client(bridge: Bridge) -> None:
    """An offline engine cannot read the server: the report answers 503, not a blank page."""
    async with client_for(bridge, secret=None) as http:
        assert (await http.get("/report")).status_code == 503


async def test_api_replay_all_puts_back_every_dead_letter(bridge: Bridge) -> None:
    """Replay all: the letter that is a resource is journalled and leaves the list; the one
    that is still not JSON stays, with its reason."""
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with client_for(bridge) as http:
        answer = await http.post("/console/api/dead-letters/replay", headers=auth)
        assert answer.status_code == 200 and answer.json()["replayed"] == 1
        rows = (await http.get("/console/api/dead-letters", headers=auth)).json()
    assert [r["reason"] for r in rows["dead_letters"]] == ["not JSON"]


async def test_replaying_one_dead_write_puts_back_every_dead_write(bridge: Bridge) -> None:
    """A dead outbox item cannot be put back alone (the store requeues dead writes
    together, each idempotent on the server): replaying its letter puts both back, and
    leaves the unrelated input letters alone."""
    from fhirbridge.store.base import OutboxItem

    store = bridge.store
    store.enqueue([OutboxItem(key="task:a", kind="create-task", payload={"n": 1})])
    store.enqueue([OutboxItem(key="task:b", kind="create-task", payload={"n": 2})])
    for item in store.claim_outbox():
        store.fail_outbox(item.id, "422 invalid", dead=True)
    outbox_letters = [d.id for d in store.dead_letters() if d.source == "outbox"]
    assert len(outbox_letters) == 2
    assert bridge.replay(only=outbox_letters[0]) == 2
    assert {i.key for i in store.outbox_items("pending")} == {"task:a", "task:b"}
    assert [d.source for d in store.dead_letters()] == ["notification", "notification"]
