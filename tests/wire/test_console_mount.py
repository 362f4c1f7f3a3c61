"""The console mounted in the receiver app, as ``serve`` runs it."""

from __future__ import annotations

from tests._builders.receiver import AUTH, running


async def test_the_receiver_serves_the_console_behind_its_secret() -> None:
    """Mounted in the receiver app (what ``serve`` runs): /console refuses without the
    receiver's secret and answers with it, showing the receiver's feed figures; the
    receiver's own routes still answer."""
    async with running() as served:
        assert (await served.http.get("/console")).status_code == 401
        page = await served.http.get("/console", headers=AUTH)
        assert page.status_code == 200 and "running in this process" in page.text
        assert (await served.http.get("/healthz")).status_code == 200
        assert (await served.http.get("/nowhere", headers=AUTH)).status_code == 404
