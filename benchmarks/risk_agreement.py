"""LACE of the engine against the published definition, stay by stay, on a SNOMED CT cohort.

    .venv/bin/python benchmarks/risk_agreement.py [--patients 29] [--seed 20261201]

The cohort and the reference implementation are in ``benchmarks/_risk_cohort.py`` (seeded,
no fhirbridge code). For every stay the patient survived, the engine's ``fhirbridge.risk.lace``
(with the patient's Conditions and Encounters, as ``riskplan`` passes them) is compared
with the reference: total, tier and each item. It runs twice: with the facility's zone
(``engine.timezone: America/New_York``) and with the zone unset (UTC dates). Stays whose
patient died are checked to get no score (``fhirbridge.risk.eligibility``), when the engine
has that module. Run it with ``PYTHONPATH`` pointing at another checkout to measure that
checkout's engine on the same cohort.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections import Counter
from datetime import UTC, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent


def _cohort_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_risk_cohort", HERE / "_risk_cohort.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_risk_cohort"] = module
    spec.loader.exec_module(module)
    return module


def agreement(cohort: list, tz: tzinfo, module) -> dict[str, int]:  # type: ignore[no-untyped-def,type-arg]
    """Counts of stays and of agreements (total, tier, L, A, C, E) over the surviving stays."""
    from fhirbridge.risk import lace

    counts: Counter[str] = Counter()
    for patient in cohort:
        for stay in patient.stays:
            if stay.died:
                continue
            want = module.reference_lace(patient, stay)
            others = [e for e in patient.encounters if e["id"] != stay.encounter["id"]]
            got = lace(stay.encounter, conditions=patient.conditions, encounters=others, tz=tz)
            counts["stays"] += 1
            counts["total"] += got.total == want.total
            counts["tier"] += got.tier == want.tier
            for item in "LACE":
                counts[item] += got.components[item] == getattr(want, item)
    return dict(counts)


def deaths_scored(cohort: list) -> tuple[int, int | None]:  # type: ignore[type-arg]
    """(stays whose patient died, how many of them the engine would still score or None)."""
    died = [s for p in cohort for s in p.stays if s.died]
    try:
        from fhirbridge.risk.eligibility import not_scored_reason
    except ImportError:
        return len(died), None
    return len(died), sum(not_scored_reason(s.encounter) is None for s in died)


def main() -> None:
    """Print the agreement table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=29)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    module = _cohort_module()
    cohort = module.generate(seed=args.seed, patients=args.patients)
    import fhirbridge

    print(f"engine: {Path(fhirbridge.__file__).parent}")
    print(f"cohort: {args.patients} patients, seed {args.seed}")
    print()
    print("| days counted in | stays | total | tier | L | A | C | E |")
    print("|---|---|---|---|---|---|---|---|")
    for label, tz in (
        (f"{module.FACILITY_ZONE} (engine.timezone set)", ZoneInfo(module.FACILITY_ZONE)),
        ("UTC (engine.timezone unset)", UTC),
    ):
        c = agreement(cohort, tz, module)
        n = c["stays"]
        cells = " | ".join(f"{c[k]}/{n}" for k in ("total", "tier", "L", "A", "C", "E"))
        print(f"| {label} | {n} | {cells} |")
    died, scored = deaths_scored(cohort)
    print()
    shown = "n/a (no eligibility check)" if scored is None else str(scored)
    print(f"stays ending in death: {died}; still scored by the engine: {shown}")


if __name__ == "__main__":
    main()
