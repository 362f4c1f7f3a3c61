"""Realistic, deterministic Encounter version streams for the benchmarks and their smoke test.

:func:`encounter_versions` yields ``count`` R4B Encounter versions as compact JSON bytes, in
``meta.lastUpdated`` order across all patients (the order a ``_lastUpdated`` poll reads them).
Each patient lives through a sequence of stays:

- inpatient stays: ``planned`` -> ``in-progress`` (the admission, first ward) ->
  ``in-progress`` in another unit (a transfer; sometimes two) -> ``finished`` with a discharge
  disposition drawn from home / snf / aadvice / oth / exp / hosp;
- emergency visits (``EMER``): ``arrived`` -> ``in-progress`` (a bay) -> ``finished``, and
  some become an inpatient admission in the same Encounter (class ``EMER`` -> ``IMP``);
- after about one discharge in six the patient is readmitted within 30 days; after ``exp``
  the patient has no more encounters.

Every version carries what a real EHR sends (identifiers, type, priority, participants,
reasonCode, diagnosis, hospitalization, the location history, serviceProvider,
statusHistory, classHistory, meta with versionId and an increasing lastUpdated); a version
is about 2.5 KB. Everything is valid against ``fhir.resources.R4B.encounter.Encounter``.
Nothing here reads the clock or the network: the same arguments give the same bytes.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["DISPOSITIONS", "START", "encounter_versions", "patients_for"]

#: The first stays start in the 90 days from here.
START = datetime(2026, 1, 5, tzinfo=UTC)

TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
SNOMED = "http://snomed.info/sct"
ACT_CODE = f"{TERMINOLOGY}/v3-ActCode"
INPATIENT = "inpatient encounter"
HOSPITAL = "https://ehr.bench.invalid/fhir"

#: Discharge dispositions (FHIR discharge-disposition codes) and their weights.
DISPOSITIONS: tuple[tuple[str, str, float], ...] = (
    ("home", "Home", 0.56),
    ("snf", "Skilled nursing facility", 0.14),
    ("hosp", "Hospice", 0.08),
    ("oth", "Other", 0.10),
    ("aadvice", "Left against advice", 0.06),
    ("exp", "Expired", 0.06),
)
_ED_DISPOSITIONS: tuple[tuple[str, str, float], ...] = (
    ("home", "Home", 0.9),
    ("oth", "Other", 0.06),
    ("aadvice", "Left against advice", 0.04),
)

_REASONS = (
    ("233604007", "Pneumonia", "J18.9", "Pneumonia, unspecified organism"),
    ("84114007", "Heart failure", "I50.9", "Heart failure, unspecified"),
    ("13645005", "Chronic obstructive lung disease", "J44.1", "COPD with acute exacerbation"),
    ("22298006", "Myocardial infarction", "I21.9", "Acute myocardial infarction, unspecified"),
    ("230690007", "Cerebrovascular accident", "I63.9", "Cerebral infarction, unspecified"),
    ("91302008", "Sepsis", "A41.9", "Sepsis, unspecified organism"),
    ("68566005", "Urinary tract infection", "N39.0", "Urinary tract infection, site not specified"),
    ("5913000", "Fracture of neck of femur", "S72.001A", "Fracture of femoral neck, initial"),
)
_ED_REASONS = (
    ("29857009", "Chest pain", "R07.9", "Chest pain, unspecified"),
    ("21522001", "Abdominal pain", "R10.9", "Unspecified abdominal pain"),
    ("267036007", "Dyspnea", "R06.00", "Dyspnea, unspecified"),
    ("271594007", "Syncope", "R55", "Syncope and collapse"),
    ("125605004", "Fracture of bone", "S52.501A", "Fracture of radius, initial"),
)
_SURNAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad", "Novak", "Ferreira", "Kowalski")
_GIVEN = ("Amara", "Jonas", "Claire", "Kenji", "Layla", "Tomas", "Ines", "Marek")
_WARDS = (
    ("3N", "3 North Medical"),
    ("4S", "4 South Cardiology"),
    ("5E", "5 East Surgical"),
    ("ICU", "Intensive Care Unit"),
    ("SDU", "Step-down Unit"),
    ("6W", "6 West Respiratory"),
)
_ORGS = (
    ("org-stmary", "St Mary General Hospital"),
    ("org-riverside", "Riverside Medical Center"),
    ("org-northgate", "Northgate Community Hospital"),
)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


def _practitioner(rng: random.Random) -> dict[str, Any]:
    number = rng.randrange(1, 400)
    name = f"Dr {rng.choice(_GIVEN)} {rng.choice(_SURNAMES)}"
    return {"reference": f"Practitioner/pr-{number:04d}", "display": name}


@dataclass
class _Stay:
    """The mutable state of one encounter while its versions are written."""

    patient: str
    encounter_id: str
    klass: str
    org: tuple[str, str]
    visit_number: str
    reason: tuple[str, str, str, str]
    attender: dict[str, Any]
    admitter: dict[str, Any]
    readmission: bool
    version: int = 0
    status: str = "planned"
    start: datetime | None = None
    end: datetime | None = None
    disposition: tuple[str, str] | None = None
    admit_source: tuple[str, str] = ("gp", "General Practitioner referral")
    status_history: list[dict[str, Any]] = field(default_factory=list)
    class_history: list[dict[str, Any]] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    status_since: datetime | None = None

    def set_status(self, status: str, at: datetime) -> None:
        """A new status from ``at``; the one it replaces goes to statusHistory."""
        if self.status_since is not None and status != self.status:
            period = {"start": _instant(self.status_since), "end": _instant(at)}
            self.status_history.append({"status": self.status, "period": period})
        if status != self.status or self.status_since is None:
            self.status_since = at
        self.status = status

    def move(self, location: str, display: str, at: datetime) -> None:
        """The patient moves to ``location`` at ``at`` (the previous one is completed)."""
        self._close_locations(at)
        self.locations.append(
            {
                "location": {"reference": f"Location/{location}", "display": display},
                "status": "active",
                "period": {"start": _instant(at)},
            }
        )

    def _close_locations(self, at: datetime) -> None:
        for entry in self.locations:
            if entry["status"] == "active":
                entry["status"] = "completed"
                entry["period"]["end"] = _instant(at)

    def discharge(self, at: datetime, disposition: tuple[str, str]) -> None:
        """The encounter ends at ``at``: finished, with a disposition, every period closed."""
        self.end = at
        self.set_status("finished", at)
        self.disposition = disposition
        self._close_locations(at)
        for entry in self.class_history:
            entry["period"].setdefault("end", _instant(at))

    def resource(self, updated: datetime) -> dict[str, Any]:
        """The Encounter as of this version."""
        self.version += 1
        emergency = self.klass == "EMER"
        snomed, text, icd, icd_text = self.reason
        period: dict[str, Any] = {}
        if self.start is not None:
            period["start"] = _instant(self.start)
        if self.end is not None:
            period["end"] = _instant(self.end)
        participant_period = dict(period)
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": self.encounter_id,
            "meta": {
                "versionId": str(self.version),
                "lastUpdated": _instant(updated),
                "source": f"#{self.org[0]}-adt",
            },
            "identifier": [
                {
                    "use": "usual",
                    "type": _concept(f"{TERMINOLOGY}/v2-0203", "VN", "Visit number"),
                    "system": f"{HOSPITAL}/{self.org[0]}/visit-number",
                    "value": self.visit_number,
                },
            ],
            "status": self.status,
            "statusHistory": list(self.status_history),
            "class": {
                "system": ACT_CODE,
                "code": self.klass,
                "display": "emergency" if emergency else INPATIENT,
            },
            "classHistory": list(self.class_history),
            "type": [
                _concept(SNOMED, "50849002", "Emergency room admission")
                if emergency
                else _concept(SNOMED, "32485007", "Hospital admission")
            ],
            "priority": _concept(
                "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
                "EM" if emergency or self.readmission else "EL",
                "emergency" if emergency or self.readmission else "elective",
            ),
            "subject": {"reference": self.patient},
            "participant": [
                {
                    "type": [
                        _concept(
                            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "ATND",
                            "attender",
                        )
                    ],
                    "period": participant_period,
                    "individual": self.attender,
                },
                {
                    "type": [
                        _concept(
                            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "ADM",
                            "admitter",
                        )
                    ],
                    "individual": self.admitter,
                },
            ],
            "period": period,
            "reasonCode": [_concept(SNOMED, snomed, text, text)],
            "diagnosis": [
                {
                    "condition": {
                        "reference": f"Condition/{self.encounter_id}-dx1",
                        "display": icd_text,
                    },
                    "use": _concept(
                        f"{TERMINOLOGY}/diagnosis-role",
                        "DD" if self.end else "AD",
                        "Discharge diagnosis" if self.end else "Admission diagnosis",
                    ),
                    "rank": 1,
                }
            ],
            "hospitalization": self._hospitalization(icd),
            "location": [dict(entry, period=dict(entry["period"])) for entry in self.locations],
            "serviceProvider": {"reference": f"Organization/{self.org[0]}", "display": self.org[1]},
        }
        if not enc["statusHistory"]:
            del enc["statusHistory"]
        if not enc["classHistory"]:
            del enc["classHistory"]
        if not enc["location"]:
            del enc["location"]
        if not period:
            del enc["period"]
            del enc["participant"][0]["period"]
        return enc

    def _hospitalization(self, icd: str) -> dict[str, Any]:
        code, display = self.admit_source
        out: dict[str, Any] = {
            "preAdmissionIdentifier": {
                "system": f"{HOSPITAL}/{self.org[0]}/pre-admission",
                "value": f"PA{self.visit_number[1:]}",
            },
            "admitSource": _concept(f"{TERMINOLOGY}/admit-source", code, display),
        }
        if icd[0] == "I":
            out["dietPreference"] = [_concept(f"{TERMINOLOGY}/diet", "cardiac", "Cardiac")]
        if self.readmission:
            out["reAdmission"] = _concept(f"{TERMINOLOGY}/v2-0092", "R", "Re-admission")
        if self.disposition is not None:
            dcode, ddisplay = self.disposition
            out["dischargeDisposition"] = _concept(
                f"{TERMINOLOGY}/discharge-disposition", dcode, ddisplay
            )
            if dcode in ("snf", "hosp"):
                out["destination"] = {
                    "reference": f"Location/dest-{dcode}-{self.encounter_id[-2:]}",
                    "display": "Receiving facility",
                }
        return out


def _pick(rng: random.Random, table: tuple[tuple[str, str, float], ...]) -> tuple[str, str]:
    code, display, _ = rng.choices(table, weights=[w for _, _, w in table])[0]
    return code, display


def _ward(rng: random.Random, exclude: str = "") -> tuple[str, str]:
    while True:
        unit, name = rng.choice(_WARDS)
        bed = f"ward-{unit}-{rng.randrange(1, 30):02d}"
        if bed != exclude:
            return bed, f"{name}, bed {bed[-2:]}"


def _patient_versions(index: int, seed: int) -> Iterator[tuple[datetime, _Stay]]:
    """One patient's encounter versions, oldest first, forever (or until death).

    Yields ``(lastUpdated, stay)``: the caller renders the stay as it is at that moment,
    before asking for the patient's next version (which changes the stay).
    """
    rng = random.Random(seed * 1_000_003 + index)
    patient = f"Patient/pt-{index:06d}"
    org = _ORGS[index % len(_ORGS)]
    cursor = START + timedelta(minutes=rng.randrange(0, 90 * 24 * 60))
    serial = 0
    readmit = False
    while True:
        serial += 1
        emergency = not readmit and rng.random() < 0.3
        stay = _Stay(
            patient=patient,
            encounter_id=f"enc-{index:06d}-{serial:02d}",
            klass="EMER" if emergency else "IMP",
            org=org,
            visit_number=f"V{index:06d}{serial:03d}",
            reason=rng.choice(_ED_REASONS if emergency else _REASONS),
            attender=_practitioner(rng),
            admitter=_practitioner(rng),
            readmission=readmit,
        )
        if emergency:
            stay.admit_source = ("emd", "From accident/emergency department")
            arrived = cursor
            stay.start = arrived
            stay.set_status("arrived", arrived)
            stay.move(f"ed-triage-{rng.randrange(1, 5)}", "ED triage", arrived)
            yield arrived + timedelta(minutes=rng.randrange(1, 5)), stay
            seen = arrived + timedelta(minutes=rng.randrange(20, 120))
            stay.set_status("in-progress", seen)
            stay.move(f"ed-bay-{rng.randrange(1, 25):02d}", "ED treatment bay", seen)
            yield seen + timedelta(minutes=rng.randrange(1, 5)), stay
            if rng.random() < 0.2:  # admitted from the ED: the same Encounter becomes IMP
                admitted = seen + timedelta(minutes=rng.randrange(60, 360))
                stay.class_history += [
                    {
                        "class": {"system": ACT_CODE, "code": "EMER", "display": "emergency"},
                        "period": {"start": _instant(arrived), "end": _instant(admitted)},
                    },
                    {
                        "class": {"system": ACT_CODE, "code": "IMP", "display": INPATIENT},
                        "period": {"start": _instant(admitted)},
                    },
                ]
                stay.klass = "IMP"
                ward, name = _ward(rng)
                stay.move(ward, name, admitted)
                yield admitted + timedelta(minutes=rng.randrange(1, 10)), stay
                cursor = admitted
            else:
                left = seen + timedelta(minutes=rng.randrange(60, 480))
                stay.discharge(left, _pick(rng, _ED_DISPOSITIONS))
                yield left + timedelta(minutes=rng.randrange(2, 30)), stay
                if stay.disposition and stay.disposition[0] == "aadvice" and rng.random() < 0.5:
                    cursor = left + timedelta(days=rng.randrange(1, 20))
                else:
                    cursor = left + timedelta(days=rng.randrange(30, 160))
                readmit = False
                continue
        else:
            admit_at = cursor
            if readmit:
                stay.admit_source = ("emd", "From accident/emergency department")
            else:
                booked = admit_at - timedelta(hours=rng.randrange(4, 96))
                stay.start = admit_at
                stay.set_status("planned", booked)
                yield booked, stay
            stay.start = admit_at
            stay.set_status("in-progress", admit_at)
            ward, name = _ward(rng)
            stay.move(ward, name, admit_at)
            yield admit_at + timedelta(minutes=rng.randrange(1, 15)), stay
        # inpatient: one or two transfers, then the discharge
        at = cursor
        current = stay.locations[-1]["location"]["reference"].partition("/")[2]
        for _ in range(2 if rng.random() < 0.25 else 1):
            at = at + timedelta(hours=rng.randrange(4, 60))
            current, name = _ward(rng, exclude=current)
            stay.move(current, name, at)
            yield at + timedelta(minutes=rng.randrange(1, 15)), stay
        left = at + timedelta(hours=rng.randrange(20, 200))
        stay.discharge(left, _pick(rng, DISPOSITIONS))
        yield left + timedelta(minutes=rng.randrange(2, 45)), stay
        if stay.disposition and stay.disposition[0] == "exp":
            return  # died: no more encounters
        readmit = rng.random() < 0.17
        if readmit:
            cursor = left + timedelta(days=rng.randrange(1, 29), hours=rng.randrange(0, 24))
        else:
            cursor = left + timedelta(days=rng.randrange(35, 180), hours=rng.randrange(0, 24))


def patients_for(count: int) -> int:
    """How many patients a stream of ``count`` versions spreads over (10,000 for 50,000)."""
    return max(4, count // 5)


def encounter_versions(
    count: int, *, patients: int | None = None, seed: int = 20261123
) -> Iterator[bytes]:
    """``count`` Encounter versions as compact JSON bytes, in lastUpdated order."""
    patients = patients if patients is not None else patients_for(count)
    streams = [_patient_versions(i, seed) for i in range(1, patients + 1)]
    merged = heapq.merge(*streams, key=lambda item: (item[0], item[1].encounter_id))
    for updated, stay in itertools.islice(merged, count):
        # heapq.merge advances a stream (which changes its stay) only when asked for the
        # next item, so the stay is still as of this version here.
        yield json.dumps(stay.resource(updated), separators=(",", ":")).encode()
