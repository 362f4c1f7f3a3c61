"""Scores judged on the index stay's own dates: Conditions as they stood during the stay, ED
visits and admissions counted back from the admission, days counted in the facility's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fhirbridge.risk import hospital, lace
from fhirbridge.risk.comorbidity import active_during
from fhirbridge.testing.builders import SNOMED, condition
from tests.unit._risk_builders import build_encounter

#: An old stay, scored years later in a backfill: 2021-03-10 to 2021-03-14.
ADMIT = datetime(2021, 3, 10, 15, 0, tzinfo=UTC)
old_stay = partial(build_encounter, start=ADMIT, days=4)


def heart_failure(status: str = "active", **extra: Any) -> dict[str, Any]:
    """A SNOMED CT coded heart failure Condition of Patient/p1 (LACE weight 2)."""
    return condition(
        "84114007", SNOMED, rid="hf", clinical=status, display="Heart failure", **extra
    )


@pytest.mark.parametrize(
    ("extra", "status", "counts"),
    [
        # resolved in 2023, after the 2021 stay: it was active then and counts
        pytest.param(
            {"onsetDateTime": "2019-05-01", "abatementDateTime": "2023-01-10"},
            "resolved",
            True,
            id="resolved-after-the-stay",
        ),
        # resolved during the stay: present at admission, counts
        pytest.param(
            {"onsetDateTime": "2019-05-01", "abatementDateTime": "2021-03-12"},
            "resolved",
            True,
            id="resolved-during-the-stay",
        ),
        # resolved on the admission date: not resolved before it, counts
        pytest.param(
            {"onsetDateTime": "2019-05-01", "abatementDateTime": "2021-03-10"},
            "resolved",
            True,
            id="resolved-on-admission-day",
        ),
        # resolved the day before the admission: does not count, whatever the status says
        pytest.param(
            {"onsetDateTime": "2019-05-01", "abatementDateTime": "2021-03-09"},
            "active",
            False,
            id="resolved-before-admission",
        ),
        # an abatement period that started before the admission
        pytest.param(
            {"onsetDateTime": "2019-05-01", "abatementPeriod": {"start": "2020-01-01"}},
            "inactive",
            False,
            id="abatement-period-before",
        ),
        # begun after the discharge: not known at that stay
        pytest.param({"onsetDateTime": "2021-03-20"}, "active", False, id="onset-after"),
        # diagnosed during the stay: a diagnosis of the stay, counts
        pytest.param({"onsetDateTime": "2021-03-12T09:00:00Z"}, "active", True, id="onset-during"),
        # no onset: the recorded date decides
        pytest.param({"recordedDate": "2022-01-01"}, "active", False, id="recorded-after"),
        pytest.param({"recordedDate": "2020-01-01"}, "active", True, id="recorded-before"),
        # onset by period
        pytest.param({"onsetPeriod": {"start": "2020-02-01"}}, "active", True, id="onset-period"),
        # resolved with no date: cannot be placed, today's status decides
        pytest.param({"onsetDateTime": "2019-05-01"}, "resolved", False, id="resolved-undated"),
        pytest.param(
            {"onsetDateTime": "2019-05-01", "abatementBoolean": True},
            "active",
            False,
            id="abatement-boolean",
        ),
        # refuted never counts, even with dates that fit
        pytest.param(
            {
                "onsetDateTime": "2019-05-01",
                "verification": "refuted",
            },
            "active",
            False,
            id="refuted",
        ),
    ],
)
def test_conditions_count_as_they_stood_during_the_stay(
    extra: dict[str, Any], status: str, counts: bool
) -> None:
    """LACE's C for an old stay reads each Condition's dates against that stay."""
    result = lace(old_stay(), conditions=[heart_failure(status, **extra)])
    assert result.components["C"] == (2 if counts else 0)
    assert result.charlson_categories == (("chf",) if counts else ())


def test_local_dates_decide_a_condition_begun_near_midnight() -> None:
    """A diagnosis at 02:00 UTC on the day after a New York discharge was made on the
    discharge date there, and counts."""
    tz = ZoneInfo("America/New_York")
    stay = build_encounter(
        start="2021-03-10T15:00:00Z", days=None, end="2021-03-14T20:00:00Z"
    )  # discharged 16:00 New York time on 14 March
    late = heart_failure(onsetDateTime="2021-03-15T02:00:00Z")  # 22:00 on the 14th in New York
    assert lace(stay, conditions=[late], tz=tz).components["C"] == 2
    assert lace(stay, conditions=[late], tz=UTC).components["C"] == 0


def test_active_during_without_stay_dates_checks_only_what_it_can() -> None:
    """An open stay (no discharge) does not rule out a Condition begun after its start."""
    condition = heart_failure(onsetDateTime="2021-04-01")
    assert active_during(condition, date(2021, 3, 10), None, UTC)
    assert not active_during(condition, date(2021, 3, 10), date(2021, 3, 14), UTC)


def ed_visit(eid: str, start: datetime) -> dict[str, Any]:
    """A three-hour emergency visit of Patient/p1."""
    return build_encounter(eid, start=start, days=None, end=start + timedelta(hours=3), cls="EMER")


def test_ed_visits_are_counted_back_from_the_admission_not_from_today() -> None:
    """Scoring a 2021 stay in 2026, the visits of the 6 months before the 2021 admission count,
    and the later ones (before today) do not."""
    visits = [
        ed_visit("v1", ADMIT - timedelta(days=30)),  # counts
        ed_visit("v2", datetime(2020, 9, 10, 12, tzinfo=UTC)),  # exactly 6 months before: counts
        ed_visit("v3", datetime(2020, 9, 9, 12, tzinfo=UTC)),  # a day older: does not
        ed_visit("v4", datetime(2021, 6, 1, 12, tzinfo=UTC)),  # after the stay: does not
        ed_visit("v5", datetime(2026, 11, 1, 12, tzinfo=UTC)),  # recent: does not
    ]
    result = lace(old_stay(), encounters=visits)
    assert result.components["E"] == 2
    assert set(result.inputs) >= {"Encounter/v1", "Encounter/v2"}
    assert "Encounter/v5" not in result.inputs


def test_prior_admissions_are_counted_back_from_the_admission() -> None:
    """HOSPITAL's A counts the admissions of the 12 months before the index admission."""
    earlier = [
        build_encounter(f"a{i}", start=ADMIT - timedelta(days=40 * i), days=2) for i in (1, 2, 3)
    ]
    later = [
        build_encounter(f"b{i}", start=ADMIT + timedelta(days=90 * i), days=2) for i in (1, 2, 3)
    ]
    result = hospital(old_stay(), encounters=[*earlier, *later])
    assert result.components["A"] == 2  # 3 admissions before: 2-5 gives 2
