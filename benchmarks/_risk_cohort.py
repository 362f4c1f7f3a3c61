"""A seeded SNOMED CT coded cohort and a plain implementation of the published LACE index.

Used by ``benchmarks/risk_agreement.py`` (figures) and ``tests/unit/test_risk_cohort.py``
(every stay must agree). Nothing here imports fhirbridge: the reference is written from the
published definition, not from the engine.

The cohort (:func:`generate`): patients of a US facility (America/New_York) with problem lists
coded in SNOMED CT only (a tenth of the Conditions also carry an ICD-10-CM coding, which then
decides), inpatient stays over four years admitted and discharged at any hour (times in UTC,
so that local and UTC dates differ near midnight), emergency visits, and Conditions that began,
were recorded and resolved at various times, some resolved after an old stay. The concepts
come from :data:`POOL`; each carries the Charlson category its ICD-10-CM target falls in
under Quan 2005, checked by hand. About half of them are not in the engine's SNOMED CT list,
so the engine must recognise them by their preferred term.

The reference (:func:`reference_lace`), after van Walraven et al., CMAJ 2010;182(6):551-7:

- L: days between the admission and discharge dates (facility zone): <1: 0, 1: 1, 2: 2, 3: 3,
  4-6: 4, 7-13: 5, >=14: 7;
- A: 3 when the admission was acute (emergent);
- C: Charlson comorbidities with LACE's weights (previous MI, cerebrovascular disease,
  peripheral vascular disease, diabetes without complications, peptic ulcer disease 1; CHF,
  COPD, mild liver disease, diabetes with end-organ damage, any tumour incl. leukaemia and
  lymphoma, moderate/severe renal disease 2; dementia, connective tissue disease 3;
  moderate/severe liver disease, HIV 4; metastatic solid tumour 6), severe liver over mild,
  complicated diabetes over uncomplicated, metastatic over any tumour; a total of 4 or more
  gives 5 points. A comorbidity counts when it was present at the stay: begun by the discharge
  date, not resolved before the admission date, not refuted;
- E: emergency department visits begun in the 6 months before the admission (on or after the
  same calendar day 6 months earlier), not the visit that led to this admission: 0-3 the same,
  4 or more 4.

Total 0-19; low 0-4, moderate 5-9, high >= 10.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

FACILITY_ZONE = "America/New_York"
SCT = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

#: LACE's comorbidity weights (the published LACE scoring sheet).
LACE_WEIGHTS = {
    "mi": 1,
    "cvd": 1,
    "pvd": 1,
    "diabetes": 1,
    "peptic-ulcer": 1,
    "chf": 2,
    "chronic-pulmonary": 2,
    "mild-liver": 2,
    "diabetes-complicated": 2,
    "malignancy": 2,
    "renal": 2,
    "dementia": 3,
    "connective-tissue": 3,
    "severe-liver": 4,
    "hiv": 4,
    "metastatic": 6,
    "hemiplegia": 0,
}
#: (higher, lower): the lower is not counted when the higher is present.
HIERARCHY = (
    ("severe-liver", "mild-liver"),
    ("diabetes-complicated", "diabetes"),
    ("metastatic", "malignancy"),
)

#: (SNOMED CT id, preferred term, ICD-10-CM target, Charlson category of the target or None).
POOL: tuple[tuple[str, str, str, str | None], ...] = (
    # cancers: stage-, site- and histology-specific
    ("254637007", "Non-small cell lung cancer", "C34.90", "malignancy"),
    ("254632001", "Small cell carcinoma of lung", "C34.90", "malignancy"),
    ("424132000", "Non-small cell carcinoma of lung, TNM stage 1", "C34.90", "malignancy"),
    (
        "67841000119103",
        "Primary small cell malignant neoplasm of lung, TNM stage 4",
        "C34.90",
        "malignancy",
    ),
    ("126906006", "Neoplasm of prostate", "C61", "malignancy"),
    ("93761005", "Primary malignant neoplasm of colon", "C18.9", "malignancy"),
    ("254837009", "Malignant neoplasm of breast", "C50.919", "malignancy"),
    ("399326009", "Malignant neoplasm of urinary bladder", "C67.9", "malignancy"),
    ("363478007", "Malignant tumor of thyroid gland", "C73", "malignancy"),
    ("702391001", "Primary renal cell carcinoma", "C64.9", "malignancy"),
    ("1172592001", "Non-Hodgkin lymphoma", "C85.90", "malignancy"),
    ("94381002", "Secondary malignant neoplasm of liver", "C78.7", "metastatic"),
    ("314994000", "Metastasis from malignant tumor of prostate", "C79.9", "metastatic"),
    # heart failure variants
    ("84114007", "Heart failure", "I50.9", "chf"),
    ("88805009", "Chronic congestive heart failure", "I50.9", "chf"),
    ("703272007", "Heart failure with reduced ejection fraction", "I50.20", "chf"),
    ("788950000", "Heart failure with mid range ejection fraction", "I50.9", "chf"),
    ("1296659009", "Acute exacerbation of chronic heart failure", "I50.9", "chf"),
    # COPD forms and asthma
    ("13645005", "Chronic obstructive lung disease", "J44.9", "chronic-pulmonary"),
    (
        "195951007",
        "Acute exacerbation of chronic obstructive airways disease",
        "J44.1",
        "chronic-pulmonary",
    ),
    ("185086009", "Chronic obstructive bronchitis", "J44.9", "chronic-pulmonary"),
    ("195967001", "Asthma", "J45.909", "chronic-pulmonary"),
    # diabetes, with and without complications
    ("44054006", "Diabetes mellitus type 2", "E11.9", "diabetes"),
    ("127013003", "Disorder of kidney due to diabetes mellitus", "E11.29", "diabetes-complicated"),
    (
        "1551000119108",
        "Nonproliferative retinopathy due to type 2 diabetes mellitus",
        "E11.329",
        "diabetes-complicated",
    ),
    (
        "368581000119106",
        "Neuropathy due to type 2 diabetes mellitus",
        "E11.40",
        "diabetes-complicated",
    ),
    (
        "421893009",
        "Renal disorder due to type 2 diabetes mellitus",
        "E11.29",
        "diabetes-complicated",
    ),
    # renal disease
    ("433144002", "Chronic kidney disease stage 3", "N18.30", "renal"),
    ("431857002", "Chronic kidney disease stage 4", "N18.4", "renal"),
    ("46177005", "End-stage renal disease", "N18.6", "renal"),
    # liver disease
    ("19943007", "Cirrhosis of liver", "K74.60", "mild-liver"),
    ("128302006", "Chronic hepatitis C", "B18.2", "mild-liver"),
    ("59927004", "Hepatic failure", "K72.90", "severe-liver"),
    # dementia types
    ("26929004", "Alzheimer's disease", "G30.9", "dementia"),
    ("429998004", "Vascular dementia", "F01.50", "dementia"),
    # others
    ("22298006", "Myocardial infarction", "I21.9", "mi"),
    ("399211009", "History of myocardial infarction", "I25.2", "mi"),
    ("230690007", "Cerebrovascular accident", "I63.9", "cvd"),
    ("400047006", "Peripheral vascular disease", "I73.9", "pvd"),
    ("69896004", "Rheumatoid arthritis", "M06.9", "connective-tissue"),
    ("13200003", "Peptic ulcer", "K27.9", "peptic-ulcer"),
    ("86406008", "Human immunodeficiency virus infection", "B20", "hiv"),
    # not Charlson comorbidities, and look-alikes that must not count
    ("59621000", "Essential hypertension", "I10", None),
    ("55822004", "Hyperlipidemia", "E78.5", None),
    ("15777000", "Prediabetes", "R73.03", None),
    ("162573006", "Suspected lung cancer", "R91.8", None),
    ("92691004", "Carcinoma in situ of prostate", "D07.5", None),
    ("40055000", "Chronic sinusitis", "J32.9", None),
    ("239873007", "Osteoarthritis of knee", "M17.9", None),
    ("14669001", "Acute renal failure syndrome", "N17.9", None),
)
#: A local problem-list code (not SNOMED CT): the engine must report it, not guess.
LOCAL_SYSTEM = "https://hospital.example/problem-list"
LOCAL_POOL: tuple[tuple[str, str], ...] = (
    ("PL-0042", "History of malignant neoplasm of breast"),
    ("PL-0107", "Heart failure, chronic (local)"),
)


@dataclass
class Stay:
    """One generated inpatient stay and what the reference needs about it."""

    encounter: dict[str, Any]
    admitted: datetime
    discharged: datetime
    acute: bool
    died: bool = False
    linked_ed: str | None = None


@dataclass
class Patient:
    """One generated patient: resources and the truth the reference reads."""

    pid: str
    conditions: list[dict[str, Any]] = field(default_factory=list)
    #: (category or None, onset date, abatement date or None, refuted), by Condition id
    truth: dict[str, tuple[str | None, date, date | None, bool]] = field(default_factory=dict)
    stays: list[Stay] = field(default_factory=list)
    ed_visits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def encounters(self) -> list[dict[str, Any]]:
        """Every Encounter of the patient (stays and ED visits)."""
        return [s.encounter for s in self.stays] + self.ed_visits


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local_moment(rng: random.Random, day: date, tz: ZoneInfo) -> datetime:
    """A local time on ``day``; late evenings and early mornings are frequent."""
    hour = rng.choice([0, 1, 2, 7, 9, 11, 14, 16, 19, 21, 22, 23])
    return datetime(day.year, day.month, day.day, hour, rng.randrange(60), tzinfo=tz)


def _condition(
    rng: random.Random, patient: Patient, index: int, first: date, last: date, tz: ZoneInfo
) -> None:
    code, display, icd10, category = rng.choice(POOL)
    cid = f"{patient.pid}-c{index}"
    onset = first + timedelta(days=rng.randrange((last - first).days))
    coding = [{"system": SCT, "code": code, "display": display}]
    truth_category = category
    if rng.random() < 0.04:
        # a local code: nothing recognises it, it counts as nothing and is reported
        code, display = rng.choice(LOCAL_POOL)
        coding = [{"system": LOCAL_SYSTEM, "code": code, "display": display}]
        truth_category = None
    elif rng.random() < 0.1:
        # dual-coded: the ICD-10-CM coding decides, and half the time it says something else
        other_code, _, other_icd, other_category = rng.choice(POOL)
        if rng.random() < 0.5 and other_code != code:
            icd10, truth_category = other_icd, other_category
        coding.append({"system": ICD10CM, "code": icd10})
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{patient.pid}"},
        "code": {"coding": coding},
    }
    if rng.random() < 0.5:
        resource["onsetDateTime"] = _stamp(_local_moment(rng, onset, tz))
    else:
        resource["onsetDateTime"] = onset.isoformat()
    resource["recordedDate"] = (onset + timedelta(days=rng.randrange(3))).isoformat()
    abated: date | None = None
    if rng.random() < 0.3:
        abated = onset + timedelta(days=rng.randrange(30, 700))
        resource["abatementDateTime"] = abated.isoformat()
        status = "resolved"
    else:
        status = "active"
    resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": status}]}
    refuted = rng.random() < 0.05
    resource["verificationStatus"] = {
        "coding": [{"system": VERIFICATION, "code": "refuted" if refuted else "confirmed"}]
    }
    patient.conditions.append(resource)
    patient.truth[cid] = (truth_category, onset, abated, refuted)


def _encounter(
    eid: str, pid: str, cls: str, start: datetime, end: datetime, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": ACT, "code": cls},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": _stamp(start), "end": _stamp(end)},
        **extra,
    }


def generate(
    seed: int = 20261201, patients: int = 29, stays_per_patient: int = 10
) -> list[Patient]:
    """The cohort: ``patients`` patients with about ``stays_per_patient`` stays each."""
    rng = random.Random(seed)
    tz = ZoneInfo(FACILITY_ZONE)
    first, last = date(2022, 1, 1), date(2026, 6, 30)
    cohort = []
    for p in range(patients):
        patient = Patient(pid=f"pt{p:03d}")
        for i in range(rng.randrange(2, 9)):
            _condition(rng, patient, i, date(2018, 1, 1), last, tz)
        span = (last - first).days
        for s in range(max(1, stays_per_patient + rng.randrange(-3, 4))):
            day = first + timedelta(days=rng.randrange(span))
            admitted = _local_moment(rng, day, tz)
            los = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 9, 13, 14, 20])
            discharged = _local_moment(rng, day + timedelta(days=los), tz)
            if discharged <= admitted:
                discharged = admitted + timedelta(hours=rng.randrange(2, 12))
            eid = f"{patient.pid}-s{s}"
            way = rng.random()
            extra: dict[str, Any] = {}
            linked = None
            if way < 0.55:
                acute = True
                extra["hospitalization"] = {
                    "admitSource": {"coding": [{"system": ADMIT_SOURCE, "code": "emd"}]}
                }
            elif way < 0.7:
                acute = True
                ed_start = admitted - timedelta(hours=rng.randrange(3, 10))
                ed_end = admitted - timedelta(hours=rng.randrange(0, 2), minutes=10)
                linked = f"{eid}-ed"
                patient.ed_visits.append(_encounter(linked, patient.pid, "EMER", ed_start, ed_end))
            else:
                acute = False
                extra["priority"] = {"coding": [{"system": PRIORITY, "code": "EL"}]}
            died = rng.random() < 0.03
            if died:
                hosp = extra.setdefault("hospitalization", {})
                hosp["dischargeDisposition"] = {"coding": [{"system": DISPOSITION, "code": "exp"}]}
            encounter = _encounter(eid, patient.pid, "IMP", admitted, discharged, **extra)
            patient.stays.append(Stay(encounter, admitted, discharged, acute, died, linked))
        for v in range(rng.randrange(0, 14)):
            while True:
                day = first + timedelta(days=rng.randrange(span))
                start = _local_moment(rng, day, tz)
                end = start + timedelta(hours=rng.randrange(1, 7))
                # a visit ending within a day before an admission would be the one that led to
                # it, and one during a stay is not a visit: draw again
                if not any(
                    s.admitted - timedelta(days=1) <= end and start <= s.discharged
                    for s in patient.stays
                ):
                    break
            visit = _encounter(f"{patient.pid}-v{v}", patient.pid, "EMER", start, end)
            patient.ed_visits.append(visit)
        cohort.append(patient)
    return cohort


def _months_before(day: date, months: int) -> date:
    total = day.year * 12 + day.month - 1 - months
    year, month = total // 12, total % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _start(encounter: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(encounter["period"]["start"].replace("Z", "+00:00"))


@dataclass(frozen=True)
class Lace:
    """The reference LACE of one stay."""

    L: int  # the published item letters
    A: int
    C: int
    E: int

    @property
    def total(self) -> int:
        """L + A + C + E."""
        return self.L + self.A + self.C + self.E

    @property
    def tier(self) -> str:
        """low 0-4, moderate 5-9, high >= 10."""
        return "low" if self.total < 5 else "moderate" if self.total < 10 else "high"


def reference_lace(patient: Patient, stay: Stay, zone: str = FACILITY_ZONE) -> Lace:
    """The published LACE of ``stay``, from the generator's truth (dates in ``zone``)."""
    tz = ZoneInfo(zone)
    admitted, discharged = (
        stay.admitted.astimezone(tz).date(),
        stay.discharged.astimezone(tz).date(),
    )
    days = (discharged - admitted).days
    points_l = 0 if days < 1 else days if days <= 3 else 4 if days <= 6 else 5 if days <= 13 else 7
    present = set()
    for category, onset, abated, refuted in patient.truth.values():
        if category is None or refuted or onset > discharged:
            continue
        if abated is not None and abated < admitted:
            continue
        present.add(category)
    for high, low in HIERARCHY:
        if high in present:
            present.discard(low)
    charlson = sum(LACE_WEIGHTS[c] for c in present)
    points_c = charlson if charlson <= 3 else 5
    window = _months_before(admitted, 6)
    visits = 0
    for visit in patient.ed_visits:
        if visit["id"] == stay.linked_ed:
            continue
        began = _start(visit)
        if began < stay.admitted and began.astimezone(tz).date() >= window:
            visits += 1
    return Lace(L=points_l, A=3 if stay.acute else 0, C=points_c, E=min(visits, 4))
