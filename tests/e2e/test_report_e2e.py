"""The coordination report read from a real sekmet server after the engine wrote its Tasks:
the measures count what the server holds (Tasks completed there by staff, a readmission
recorded there), the CLI writes the HTML page and the CSV tables."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml

from fhirbridge.engine import Bridge
from fhirbridge.report import Period
from fhirbridge.report.fetch import read_report
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import (
    engine_tasks,
    fixed,
    scenario,
)

pytestmark = pytest.mark.e2e
NOVEMBER = Period(date(2026, 11, 1), date(2026, 11, 30))


async def test_report_counts_what_the_server_holds(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge], tmp_path: Path
) -> None:
    """TCM contact 1 of 2 within 2 business days; both discharges have a visit Task;
    the second patient's readmission on day 15 counts, without completed follow-up; on 20 Nov
    the open contact and both visits (due 19 Nov) are overdue for their case managers; risk
    tiers come from the engine's RiskAssessments on the server. The CLI reads the same."""
    ids = await scenario(sekmet, make_bridge)
    bridge = make_bridge(clock=fixed("2026-11-20T12:00:00+00:00"))
    assert bridge.client is not None
    report = await read_report(
        bridge.client, period=NOVEMBER, as_of=date(2026, 11, 20), calendar=bridge.calendar
    )
    contact = report.measure("tcm-contact")
    assert (contact.total.numerator, contact.total.denominator) == (1, 2)
    assert {c.subject for c in contact.cases if c.met} == {f"Task/{ids['contact']}"}
    assert report.measure("tcm-visit").total.denominator == 2
    readmissions = report.measure("readmissions")
    assert (readmissions.total.numerator, readmissions.total.denominator) == (1, 2)
    groups = {p.label: (p.numerator, p.denominator) for p in readmissions.by_group()}
    assert groups == {"follow-up completed": (0, 1), "no completed follow-up": (1, 1)}
    # the TCM Tasks go to the care team; the case-management work (coverage reviews) to the
    # default owner
    tcm = {
        f"Task/{t['id']}"
        for patient in (ids["first"], ids["second"])
        for t in engine_tasks(sekmet, patient)
        if t["code"]["coding"][0]["code"] in ("tcm-contact", "tcm-visit")
    }
    overdue = report.measure("overdue")
    assert {p.label for p in overdue.by_owner()} >= {"Organization/care-coordination"}
    owners: dict[str, tuple[int, int]] = {}
    for case in overdue.cases:
        if case.subject in tcm and case.counted:
            met, counted = owners.get(case.owner, (0, 0))
            owners[case.owner] = (met + case.met, counted + 1)
    assert all(owner.startswith("Practitioner/") for owner in owners)
    # the first case manager: the visit (due 19 Nov); the second: the contact and the visit
    assert sorted(owners.values()) == [(1, 1), (2, 2)]
    assert {c.tier for c in contact.cases} <= {"low", "moderate", "high"}
    await check_cli(sekmet, tmp_path)


async def check_cli(sekmet: SekmetServer, tmp_path: Path) -> None:
    """`fhirbridge report --from --to --now --html --csv --json` against the server: the page
    has a chart per breakdown with one bar per week of the period, the CSV table one row per
    case, the JSON the same numbers."""
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": sekmet.base_url, "name": "sekmet"},
                "store": {"url": f"sqlite:///{tmp_path / 'cli.db'}"},
                "engine": {"default_owner": "Organization/care-coordination"},
            }
        )
    )
    page, tables = tmp_path / "report.html", tmp_path / "csv"
    result = await november_report(config, "--html", str(page), "--csv", str(tables), "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    measures = {m["id"]: m for m in figures["measures"]}
    assert (measures["tcm-contact"]["numerator"], measures["tcm-contact"]["denominator"]) == (1, 2)
    html = page.read_text()
    assert len(re.findall(r'id="tcm-contact-weekly-bar-\d+"', html)) == 6  # weeks of Nov 2026
    assert 'data-numerator="1" data-denominator="2"' in html
    with (tables / "tcm-contact.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["in_numerator"] for r in rows) == ["0", "1"]
    owner = next(r["owner"] for r in rows if r["in_numerator"] == "1")
    text = await november_report(config, "--owner", owner)
    assert text.returncode == 0, text.stderr
    contact_line = next(line for line in text.stdout.splitlines() if "TCM contact" in line)
    assert contact_line.rstrip().endswith("100%  (1/1)")  # that owner's one discharge


async def november_report(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`fhirbridge report` for November 2026 as of 20 Nov, in a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    command = [sys.executable, "-m", "fhirbridge", "--config", str(config), "report"]
    period = ["--from", "2026-11-01", "--to", "2026-11-30", "--now", "2026-11-20T12:00:00Z"]
    return await asyncio.to_thread(
        subprocess.run,
        [*command, *period, *options],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
