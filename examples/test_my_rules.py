"""Testing your own rule pack with fhirbridge.testing: no FHIR server, no database.

Run it with ``pytest examples/test_my_rules.py``. My pack asks for a pharmacist's review
within one business day of a discharge to a skilled nursing facility, and a huddle on a
readmission. The tests build the resources with :mod:`fhirbridge.testing`'s builders, let a
journal (a :class:`~fhirbridge.testing.MemoryStore`) remember an earlier stay, detect the
transitions with :func:`fhirbridge.detect.detect` and plan them with the pack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fhirbridge import CreateTask, ResourceVersion, Transition
from fhirbridge.detect import DetectContext, EncounterContext, detect
from fhirbridge.rules import PlanContext, disposition_group, load_rules
from fhirbridge.testing import MemoryStore, encounter, revise

SERVER = "https://ehr.example.org/fhir"

MY_RULES = """\
version: 1
codes:
  snf-med-review: {display: Pharmacist review of the SNF medication list}
  readmit-huddle: {display: Readmission huddle}
rules:
  - id: snf-med-review
    when:
      kind: discharge
      disposition_group: post-acute
    then:
      - create-task: {id: review, code: snf-med-review, due: {business_days: 1}, owner: [default]}
  - id: readmit-huddle
    when:
      kind: readmission
    then:
      - create-task: {id: huddle, code: readmit-huddle, due: {days: 2}, owner: [default]}
"""
NOW = datetime(2026, 11, 5, 16, tzinfo=UTC)  # a Thursday


def planned(tmp_path: Path, transition: Transition) -> list[tuple[str, str, str | None]]:
    """``(code, due, owner)`` of the Tasks my pack plans for ``transition``."""
    rules_file = tmp_path / "my-rules.yaml"
    rules_file.write_text(MY_RULES)
    plan = load_rules([rules_file]).plan(
        transition, PlanContext(now=NOW, default_owner="Organization/pharmacy")
    )
    return [(a.code, a.due.isoformat(), a.owner) for a in plan.actions if isinstance(a, CreateTask)]


def context(store: MemoryStore | None = None) -> DetectContext:
    """Detection on my server, with the patient's stays the journal knows."""
    stays = store.stays(SERVER, "Patient/p1") if store is not None else ()
    return DetectContext(
        encounter=EncounterContext(
            server=SERVER, stays=stays, disposition_group=disposition_group, now=NOW
        )
    )


def test_discharge_to_snf_gets_a_pharmacist_review(tmp_path: Path) -> None:
    """A stay discharged to a SNF on Thursday: my review is due on Friday."""
    before = encounter(status="in-progress", meta={"versionId": "1"})
    after = encounter(disposition="snf", meta={"versionId": "2"})  # finished on 5 Nov

    (discharge,) = [t for t in detect(before, after, context()) if t.kind.value == "discharge"]
    assert planned(tmp_path, discharge) == [
        ("snf-med-review", "2026-11-06", "Organization/pharmacy")
    ]


def test_readmission_seen_through_the_journal_gets_a_huddle(tmp_path: Path) -> None:
    """The journal holds a stay that ended on 20 October; the admission on 2 November is a
    readmission, and my huddle is due two days after it."""
    store = MemoryStore()
    earlier = encounter("e0", start="2026-10-15T08:00:00Z", end="2026-10-20T12:00:00Z")
    (version,) = store.append([ResourceVersion.from_json(SERVER, revise(earlier, version=3))])
    store.complete(version)

    admitted = encounter(status="in-progress", meta={"versionId": "1"})
    found = detect(None, admitted, context(store))
    (readmission,) = [t for t in found if t.kind.value == "readmission"]
    assert planned(tmp_path, readmission) == [
        ("readmit-huddle", "2026-11-04", "Organization/pharmacy")
    ]
    # without the journal's stay there is nothing to be readmitted after
    assert [t.kind.value for t in detect(None, admitted, context())] == ["admission"]
