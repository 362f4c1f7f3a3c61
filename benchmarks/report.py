"""How long the coordination report takes to compute and draw, offline.

Generates (deterministically, seed 20261201) a quarter of a hospital's discharges: Tasks as
the engine writes them (TCM contact and visit per discharge, medication reconciliation for
the high-risk ones, referral tracking, a rule pack's coverage reviews), their Encounters,
some readmissions, risk tiers and Appointments; then times ``compute`` (the measures) and
``render_html`` (every chart drawn by matplotlib into one page), and prints a table.

    .venv/bin/python benchmarks/report.py [--discharges 2000]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhirbridge.report import Period, ReportData, compute
from fhirbridge.report.html import render_html
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.values import TASK_CODE_SYSTEM

AS_OF = date(2026, 12, 1)
PERIOD = Period(AS_OF - timedelta(days=89), AS_OF)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def generate(discharges: int, seed: int = 20261201) -> ReportData:
    """A deterministic quarter of discharges and their coordination work."""
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    encounters: dict[str, dict[str, Any]] = {}
    tiers: dict[str, str] = {}
    appointments: list[dict[str, Any]] = []
    owners = [f"Practitioner/cm-{n}" for n in range(20)]

    def task(code: str, patient: str, encounter: str | None, at: datetime, due: int) -> None:
        status = rng.choices(["completed", "requested", "cancelled"], [0.7, 0.25, 0.05])[0]
        done = at + timedelta(hours=rng.randint(2, 24 * 20))
        tasks.append(
            {
                "resourceType": "Task",
                "id": f"t{len(tasks)}",
                "status": status,
                "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code}]},
                "for": {"reference": patient},
                **({"encounter": {"reference": encounter}} if encounter else {}),
                "owner": {"reference": rng.choice(owners)},
                "authoredOn": _iso(at),
                "lastModified": _iso(done if status != "requested" else at),
                "restriction": {"period": {"end": (at + timedelta(days=due)).date().isoformat()}},
            }
        )

    start = datetime.combine(PERIOD.start, datetime.min.time(), UTC)
    for n in range(discharges):
        patient, stay = f"Patient/p{n}", f"Encounter/e{n}"
        end = start + timedelta(minutes=rng.randint(0, 89 * 24 * 60))
        encounters[stay] = {
            "resourceType": "Encounter",
            "id": f"e{n}",
            "status": "finished",
            "class": {"code": "IMP"},
            "subject": {"reference": patient},
            "period": {"start": _iso(end - timedelta(days=4)), "end": _iso(end)},
        }
        tier = rng.choices(["high", "moderate", "low"], [0.25, 0.35, 0.4])[0]
        tiers[stay] = tiers[patient] = tier
        task("tcm-contact", patient, stay, end, 2)
        task("tcm-visit", patient, stay, end, 7 if tier == "high" else 14)
        if tier == "high":
            task("med-reconciliation", patient, stay, end, 7)
        if rng.random() < 0.3:
            task("referral-tracking", patient, None, end, 30)
        if rng.random() < 0.2:
            task("coverage-review", patient, stay, end, 3)
        if rng.random() < 0.12:
            back = end + timedelta(days=rng.randint(1, 40))
            encounters[f"Encounter/r{n}"] = {
                "resourceType": "Encounter",
                "id": f"r{n}",
                "status": "in-progress",
                "class": {"code": "IMP"},
                "subject": {"reference": patient},
                "period": {"start": _iso(back)},
            }
        appointments.append(
            {
                "resourceType": "Appointment",
                "id": f"a{n}",
                "status": rng.choices(["fulfilled", "noshow"], [0.85, 0.15])[0],
                "start": _iso(end + timedelta(days=rng.randint(3, 14))),
                "participant": [{"actor": {"reference": patient}}],
            }
        )
    return ReportData(tasks=tasks, encounters=encounters, tiers=tiers, appointments=appointments)


def main() -> None:
    """Generate, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--discharges", type=int, default=2000)
    args = parser.parse_args()
    data = generate(args.discharges)
    calendar = BusinessCalendar()
    began = time.perf_counter()
    report = compute(data, period=PERIOD, as_of=AS_OF, calendar=calendar)
    computed = time.perf_counter() - began
    began = time.perf_counter()
    page = render_html(report, generated=datetime(2026, 12, 1, 9, tzinfo=UTC))
    rendered = time.perf_counter() - began
    charts = page.count('<figure class="chart"')
    print(f"discharges {args.discharges}, Tasks {len(data.tasks)}, measures {len(report.measures)}")
    print("| step | seconds |")
    print("| --- | ---: |")
    print(f"| compute (every measure) | {computed:.2f} |")
    print(f"| render_html ({charts} charts) | {rendered:.2f} |")
    print(f"| per chart | {rendered / charts:.3f} |")
    print(f"page size: {len(page) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
