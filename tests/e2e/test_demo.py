"""The README's main command: `fhirbridge demo` runs the whole loop on its embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbridge.demo import run_demo

pytestmark = pytest.mark.e2e


async def test_demo_writes_the_work_once_and_shows_it(tmp_path: Path) -> None:
    """The demo's engine run writes Tasks for every story, matches the frail patient's
    support to high risk, reviews the uninsured patient's coverage, refers the frail
    patient's food insecurity (tracked on the follow-up pass), and its second run writes
    nothing."""
    lines: list[str] = []
    await run_demo(tmp_path, echo=lines.append)
    text = "\n".join(lines)
    assert "tasks created 25 (already there 0)" in text
    assert "med-reconciliation" in text
    assert "coverage-review        1 written" in text
    assert "Social-need referrals written (1 ServiceRequests)" in text
    follow = next(line for line in lines if line.startswith("Follow-up pass"))
    assert "tasks created 1 " in follow  # the referral's tracking Task
    assert "referral-tracking      1 written" in text
    assert "  lace      high" in text
    assert "Second run (exactly once):" in text
    second = next(line for line in lines if line.strip().startswith("Second run"))
    assert "tasks created 0" in second and "planned writes 0" in second
    page = tmp_path / "fhirbridge-report.html"  # it ends with the coordination report
    assert f"written to {page}" in lines[-1]
    assert 'id="tcm-contact-weekly"' in page.read_text()
