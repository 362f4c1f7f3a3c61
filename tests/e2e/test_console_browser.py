"""The console and the report in a real browser (Debian's headless Chromium, driven by
Selenium) on a running engine after a discharge scenario on sekmet: the console refuses
without the secret, a replayed dead letter leaves the list and its Tasks appear on the
server, and every chart of the report has drawn its bars. Screenshots go to the test's
temporary folder (and the README's two to ``$SCREENSHOTS_DIR`` when set: that is how
``docs/screenshots`` is made)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from fhirbridge.console import console_app
from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import discharged_home, engine_tasks, fixed, recent, scenario

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SECRET = "browser-s3cret"
NOW = "2026-11-20T12:00:00+00:00"
#: The screenshots the README shows (copied to $SCREENSHOTS_DIR).
README_SHOTS = ("console", "report")


def _missing() -> str:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install selenium)")
    return ", ".join(missing)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile and no background networking."""
    missing = _missing()
    if missing:
        pytest.skip(f"browser tests need {missing} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def served(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> AsyncIterator[tuple[str, Bridge]]:
    """A scenario on sekmet (discharges, a contact done, a readmission, two referrals of
    which one completed, the engine's timers on 19 Nov), then the console app of its engine
    under uvicorn on loopback (in the test's event loop); yields the base URL and the engine."""
    ids = await scenario(sekmet, make_bridge)  # two discharges, a contact done, a readmission
    first = sekmet.referral(ids["first"])
    sekmet.referral(ids["second"])  # stays open
    await make_bridge(clock=fixed("2026-11-09T10:00:00+00:00")).run_once(since=recent())
    referral = sekmet.read("ServiceRequest", first)
    referral["status"] = "completed"
    sekmet.update(referral)
    await make_bridge(clock=fixed("2026-11-19T10:00:00+00:00")).run_once(since=recent())
    engine = make_bridge(clock=fixed(NOW))
    port = free_port()
    app = console_app(engine, secret=SECRET, clock=fixed(NOW))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(60):  # uvicorn offers no event to wait on
        while not server.started:
            assert not task.done(), "the console did not start"
            await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", engine
    finally:
        server.should_exit = True
        await task


def shoot(driver: Any, tmp_path: Path, name: str) -> None:
    """A full-page screenshot into the test's folder (and $SCREENSHOTS_DIR when set)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 40, 12000))
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    target = os.environ.get("SCREENSHOTS_DIR")
    if target and name in README_SHOTS:
        from PIL import Image  # matplotlib's dependency; a 64-colour palette keeps it small

        Path(target).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=64)
            small.save(Path(target) / f"{name}.png", optimize=True)
    driver.set_window_size(1280, 2000)


async def test_console_replay_and_report_in_chromium(
    browser: Any, served: tuple[str, Bridge], sekmet: SekmetServer, tmp_path: Path
) -> None:
    """Without the secret the console shows only the sign-in form; signed in, it lists the
    dead letter (a discharge notification the journal could not take); Replay makes it
    disappear and the discharge's TCM Tasks appear on the server; the report's charts each
    draw one bar group per point, the weekly ones one per week of the period."""
    base, engine = served
    patient, stay = discharged_home(sekmet, "2026-11-09T08:00:00Z", "2026-11-12T15:00:00Z")
    encounter = sekmet.read("Encounter", stay)
    letter = engine.store.dead_letter(
        "notification",
        f"PUT /notify/Encounter/{stay}",
        "journal unavailable (disk full)",
        json.dumps(encounter).encode(),
    )
    # the browser waits on pages this event loop serves: drive it from a thread
    await asyncio.to_thread(drive, browser, base, letter, sekmet, patient, tmp_path)


def appears(browser: Any, by: str, value: str, text: str = "", within: float = 60) -> Any:
    """The element (holding ``text``) once the page the browser is loading has it: a click
    that submits a form returns before the next page is there."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def found(driver: Any) -> Any:
        element = driver.find_element(by, value)
        return element if text in element.text else None

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, within, ignored_exceptions=ignored).until(found)


def drive(
    browser: Any, base: str, letter: int, sekmet: SekmetServer, patient: str, tmp_path: Path
) -> None:
    """The clicks and checks of the browser test (blocking)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/console")
    assert browser.find_elements(By.ID, "secret")
    assert not browser.find_elements(By.ID, "dead-letter-table")
    shoot(browser, tmp_path, "console-refused")

    browser.find_element(By.ID, "secret").send_keys(SECRET)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    row = appears(browser, By.ID, f"dead-letter-{letter}")  # the signed-in page has loaded
    assert "disk full" in row.text
    shoot(browser, tmp_path, "console")

    assert engine_tasks(sekmet, patient) == []
    row.find_element(By.CSS_SELECTOR, "button").click()
    appears(browser, By.ID, "flash", "Replayed 1")  # the next page says so (or this times out)
    assert not browser.find_elements(By.ID, f"dead-letter-{letter}")
    codes = {t["code"]["coding"][0]["code"] for t in engine_tasks(sekmet, patient)}
    assert {"tcm-contact", "tcm-visit"} <= codes
    shoot(browser, tmp_path, "console-replayed")

    browser.get(f"{base}/report?from=2026-11-01&to=2026-11-30")
    figures = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    assert len(figures) >= 9
    for figure in figures:
        bars = figure.find_elements(By.CSS_SELECTOR, "svg g[id*='-bar-']")
        assert len(bars) == int(figure.get_attribute("data-bars")) > 0, figure.get_attribute("id")
    weekly = browser.find_elements(By.CSS_SELECTOR, "#tcm-contact-weekly svg g[id*='-bar-']")
    assert len(weekly) == 6  # the weeks November 2026 touches
    headline = browser.find_element(By.CSS_SELECTOR, "#tcm-contact .headline")
    assert headline.get_attribute("data-denominator") == "3"
    shoot(browser, tmp_path, "report")
    assert (tmp_path / "report.png").stat().st_size > 10_000
