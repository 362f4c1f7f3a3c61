"""Case-management writes, pure parts: the referral ServiceRequest the engine builds is valid
FHIR, is a referral to the existing tracking (so referral-placed follows it), and survives
the outbox; the lookups' pure helpers pick the latest risk tiers."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fhirbridge.casemgmt import latest_tiers, worst_tier
from fhirbridge.detect import detect
from fhirbridge.values import CompleteCarePlan, CreateReferral, Transition, TransitionKind
from fhirbridge.writeback.casework import build_referral
from fhirbridge.writeback.outbox import action_from_payload, outbox_item

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
NEED = Transition(
    kind=TransitionKind.SOCIAL_NEED,
    patient="Patient/p1",
    focus="Observation/o1",
    occurred_at=datetime(2026, 3, 6, 15, tzinfo=UTC),
)
REFERRAL = CreateReferral(
    rule_id="social-need-referral",
    action_id="refer",
    need="food-insecurity",
    display="Refer to a community food resource.",
    categories=((SDOHCC, "food-insecurity", ""),),
    patient="Patient/p1",
    reason="Observation/o1",
    encounter=None,
    occurrence=date(2026, 3, 20),
    performer="Organization/food-bank",
    identifier="abc123",
    transition_key=NEED.key,
)


def test_referral_is_a_valid_gravity_shaped_service_request() -> None:
    """Active order, the need's SDOH category plus SNOMED 3457005, reason the screening,
    occurrence the due date, the engine's identifier and tag."""
    request = build_referral(
        REFERRAL, authored_on=datetime(2026, 3, 6, 16, tzinfo=UTC), requester="Device/fhirbridge"
    )
    assert (request["status"], request["intent"]) == ("active", "order")
    codes = {c["code"] for cat in request["category"] for c in cat["coding"]}
    assert codes == {"food-insecurity", "3457005"}
    assert request["reasonReference"] == [{"reference": "Observation/o1"}]
    assert request["occurrenceDateTime"] == "2026-03-20"
    assert request["performer"] == [{"reference": "Organization/food-bank"}]
    assert request["identifier"][0]["value"] == "abc123"


def test_written_referral_is_picked_up_by_the_existing_referral_tracking() -> None:
    """Seen by the poll, the engine's referral gives referral-placed (due its occurrence),
    which the shipped referral-tracking rule turns into the tracking Task."""
    request = build_referral(
        REFERRAL, authored_on=datetime(2026, 3, 6, 16, tzinfo=UTC), requester="Device/fhirbridge"
    )
    request["id"] = "sr1"
    request["meta"] = {**request["meta"], "versionId": "1", "lastUpdated": "2026-03-06T16:00:01Z"}
    (placed,) = detect(None, request)
    assert placed.kind is TransitionKind.REFERRAL_PLACED
    assert placed.focus == "ServiceRequest/sr1"
    assert placed.facts["due"] == "2026-03-20"


def test_case_management_actions_survive_the_outbox() -> None:
    """CreateReferral and CompleteCarePlan go into the outbox and come back equal; a second
    enqueue of the same referral has the same key."""
    done = CompleteCarePlan(
        rule_id="careplan-completed",
        careplan="CarePlan/cp1",
        patient="Patient/p1",
        reason="done",
        transition_key="careplan-done|CarePlan/cp1|4",
    )
    for action in (REFERRAL, done):
        item = outbox_item(action, NEED)
        assert action_from_payload(item.kind, item.payload) == action
    assert outbox_item(REFERRAL, NEED).key == "referral:abc123"


def test_latest_tier_per_score_of_the_patient_only() -> None:
    """The newest RiskAssessment per score method wins; other patients' are ignored (servers
    that ignore ``subject`` return them); the worst tier ranks intermediate as moderate."""

    def assessment(patient: str, method: str, tier: str, when: str) -> dict[str, object]:
        return {
            "resourceType": "RiskAssessment",
            "subject": {"reference": patient},
            "method": {"coding": [{"code": method}]},
            "occurrenceDateTime": when,
            "prediction": [{"qualitativeRisk": {"text": tier}}],
        }

    found = [
        assessment("Patient/p1", "lace", "low", "2026-01-01T10:00:00+00:00"),
        assessment("Patient/p1", "lace", "high", "2026-03-01T10:00:00+00:00"),
        assessment("Patient/p1", "hospital", "intermediate", "2026-03-01T10:00:00+00:00"),
        assessment("Patient/p2", "lace", "low", "2026-04-01T10:00:00+00:00"),
    ]
    tiers = latest_tiers(found, "Patient/p1")
    assert tiers == {"lace": "high", "hospital": "intermediate"}
    assert worst_tier(tiers) == "high"
    assert worst_tier({"hospital": "intermediate", "lace": "low"}) == "intermediate"
    assert worst_tier({}) is None
