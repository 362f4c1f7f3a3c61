"""The SNOMED CT side of the Charlson table: listed concepts, the term fallback, ICD-10-CM
precedence, local codes, and the report of what was not recognised.

Facts pinned here: Quan et al., Med Care 2005;43(11):1130-9 (ICD-10 categories); the NLM SNOMED
CT to ICD-10-CM map (US Edition) for the targets in mappings/charlson-snomed.yaml; LACE's
comorbidity weights (van Walraven et al., CMAJ 2010; the LACE scoring sheet).
"""

from __future__ import annotations

from typing import Any

import pytest

from fhirbridge.errors import ConfigError
from fhirbridge.risk import charlson, lace
from fhirbridge.risk import codes as codes_module
from fhirbridge.risk.codes import (
    CHARLSON_SNOMED_FILE,
    charlson_table,
)
from fhirbridge.risk.comorbidity import charlson_detail, classify_condition

SCT = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOCAL = "https://hospital.example/problem-list"


def coded(
    *codings: tuple[str, str, str | None], cid: str = "c1", text: str | None = None
) -> dict[str, Any]:
    """A Condition of Patient/p1 with the given (system, code, display) codings."""
    code: dict[str, Any] = {
        "coding": [{"system": s, "code": c, **({"display": d} if d else {})} for s, c, d in codings]
    }
    if text:
        code["text"] = text
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": "Patient/p1"},
        "code": code,
    }


# (category, listed SNOMED CT concept, its display, ICD-10-CM code of the category)
LISTED = [
    # stage- and histology-specific lung cancers are malignancies (C34)
    pytest.param("malignancy", "254637007", "Non-small cell lung cancer", "C34.90", id="nsclc"),
    pytest.param("malignancy", "254632001", "Small cell carcinoma of lung", "C34.91", id="sclc"),
    pytest.param(
        "malignancy",
        "424132000",
        "Non-small cell carcinoma of lung, TNM stage 1",
        "C34.11",
        id="nsclc-stage-1",
    ),
    pytest.param(
        "malignancy",
        "67841000119103",
        "Primary small cell malignant neoplasm of lung, TNM stage 4",
        "C34.92",
        id="sclc-stage-4",
    ),
    # site-specific: prostate, colon, breast; leukaemia and lymphoma count too
    pytest.param("malignancy", "126906006", "Neoplasm of prostate", "C61", id="prostate"),
    pytest.param(
        "malignancy", "93761005", "Primary malignant neoplasm of colon", "C18.9", id="colon"
    ),
    pytest.param("malignancy", "254837009", "Malignant neoplasm of breast", "C50.911", id="breast"),
    pytest.param("malignancy", "91861009", "Acute myeloid leukemia", "C92.00", id="aml"),
    pytest.param(
        "metastatic", "94381002", "Secondary malignant neoplasm of liver", "C78.7", id="mets"
    ),
    # heart-failure variants
    pytest.param(
        "chf", "703272007", "Heart failure with reduced ejection fraction", "I50.20", id="hfref"
    ),
    pytest.param(
        "chf", "446221000", "Heart failure with normal ejection fraction", "I50.30", id="hfpef"
    ),
    pytest.param(
        "chf",
        "443253003",
        "Acute on chronic systolic heart failure",
        "I50.23",
        id="acute-on-chronic",
    ),
    pytest.param(
        "chf",
        "5148006",
        "Hypertensive heart disease with congestive heart failure",
        "I11.0",
        id="hhd",
    ),
    # COPD forms
    pytest.param(
        "chronic-pulmonary",
        "195951007",
        "Acute exacerbation of chronic obstructive airways disease",
        "J44.1",
        id="aecopd",
    ),
    pytest.param("chronic-pulmonary", "87433001", "Pulmonary emphysema", "J43.9", id="emphysema"),
    pytest.param(
        "chronic-pulmonary", "426656000", "Severe persistent asthma", "J45.50", id="asthma"
    ),
    # diabetes with complications (end-organ damage) and without
    pytest.param(
        "diabetes-complicated",
        "1551000119108",
        "Nonproliferative retinopathy due to type 2 diabetes mellitus",
        "E11.329",
        id="retinopathy",
    ),
    pytest.param(
        "diabetes-complicated",
        "368581000119106",
        "Neuropathy due to type 2 diabetes mellitus",
        "E11.40",
        id="neuropathy",
    ),
    pytest.param(
        "diabetes-complicated",
        "90781000119102",
        "Microalbuminuria due to type 2 diabetes mellitus",
        "E11.29",
        id="microalbuminuria",
    ),
    pytest.param(
        "diabetes", "313436004", "Type 2 diabetes mellitus without complication", "E11.9", id="dm2"
    ),
    # renal disease by stage, and kidney transplant status
    pytest.param("renal", "700379002", "Chronic kidney disease stage 3B", "N18.32", id="ckd-3b"),
    pytest.param(
        "renal", "714152005", "Chronic kidney disease stage 5 on dialysis", "N18.6", id="ckd-5d"
    ),
    pytest.param(
        "renal", "161665007", "History of renal transplant", "Z94.0", id="kidney-transplant"
    ),
    # liver disease, mild and severe
    pytest.param(
        "mild-liver", "420054005", "Alcoholic cirrhosis", "K70.30", id="alcoholic-cirrhosis"
    ),
    pytest.param("mild-liver", "61977001", "Chronic type B viral hepatitis", "B18.1", id="hep-b"),
    pytest.param("severe-liver", "28670008", "Esophageal varices", "I85.00", id="varices"),
    pytest.param("severe-liver", "51292008", "Hepatorenal syndrome", "K76.7", id="hepatorenal"),
    # dementia types
    pytest.param("dementia", "429998004", "Vascular dementia", "F01.50", id="vascular"),
    pytest.param(
        "dementia", "312991009", "Senile dementia of the Lewy body type", "F02.80", id="lewy"
    ),
    pytest.param("dementia", "230270009", "Frontotemporal dementia", "F02.80", id="ftd"),
    # the rest of the 17
    pytest.param(
        "mi",
        "401314000",
        "Acute non-ST segment elevation myocardial infarction",
        "I21.4",
        id="nstemi",
    ),
    pytest.param("mi", "399211009", "History of myocardial infarction", "I25.2", id="old-mi"),
    pytest.param("pvd", "840580004", "Peripheral arterial disease", "I73.9", id="pad"),
    pytest.param("cvd", "422504002", "Ischemic stroke", "I63.9", id="stroke"),
    pytest.param(
        "connective-tissue", "239791005", "Seropositive rheumatoid arthritis", "M05.9", id="ra"
    ),
    pytest.param("peptic-ulcer", "51868009", "Ulcer of duodenum", "K26.9", id="duodenal"),
    pytest.param("hemiplegia", "60389000", "Paraplegia", "G82.20", id="paraplegia"),
    pytest.param("hiv", "62479008", "Acquired immune deficiency syndrome", "B20", id="aids"),
]


@pytest.mark.parametrize(("category", "sct", "display", "icd"), LISTED)
def test_snomed_only_icd_only_and_dual_coded_agree(
    category: str, sct: str, display: str, icd: str
) -> None:
    """A listed SNOMED CT concept, the ICD-10-CM code of its category, and both together put
    the Condition in the same category."""
    assert charlson([coded((SCT, sct, display))])[1] == (category,)
    assert charlson([coded((SCT, sct, None))])[1] == (category,)
    assert charlson([coded((ICD10CM, icd, None))])[1] == (category,)
    assert charlson([coded((SCT, sct, display), (ICD10CM, icd, None))])[1] == (category,)


# concepts not in the list, recognised by their preferred terms (the documented fallback)
UNLISTED = [
    pytest.param("malignancy", "Malignant neoplasm of urinary bladder", id="bladder"),
    pytest.param("malignancy", "Primary malignant neoplasm of lung TNM stage 1", id="lung-stage-1"),
    pytest.param("malignancy", "Adenocarcinoma of pancreas", id="adenocarcinoma"),
    pytest.param("malignancy", "Diffuse large B-cell lymphoma", id="dlbcl"),
    pytest.param("malignancy", "Triple-negative breast cancer", id="tnbc"),
    pytest.param("metastatic", "Metastatic malignant neoplasm to bone", id="bone-mets"),
    pytest.param("chf", "Heart failure with mid range ejection fraction", id="hfmref"),
    pytest.param("chf", "Acute exacerbation of chronic heart failure", id="exacerbation"),
    pytest.param(
        "chronic-pulmonary",
        "Chronic obstructive pulmonary disease with acute lower respiratory infection",
        id="copd-infection",
    ),
    pytest.param(
        "diabetes-complicated",
        "Type 2 diabetes mellitus with diabetic polyneuropathy",
        id="polyneuropathy",
    ),
    pytest.param(
        "diabetes-complicated",
        "Renal disorder due to type 2 diabetes mellitus",
        id="diabetic-kidney",
    ),
    pytest.param("diabetes", "Hypoglycemia due to type 2 diabetes mellitus", id="hypoglycaemia"),
    pytest.param(
        "renal", "Chronic kidney disease stage 3A due to hypertension", id="ckd-hypertension"
    ),
    pytest.param("renal", "Anemia in end stage renal disease", id="esrd-anaemia"),
    pytest.param("mild-liver", "Chronic viral hepatitis C", id="hep-c"),
    pytest.param("severe-liver", "Alcoholic hepatic failure", id="alcoholic-failure"),
    pytest.param("dementia", "Dementia with Lewy bodies", id="lewy"),
    pytest.param("dementia", "Alzheimer's disease with late onset", id="late-alzheimer"),
    pytest.param("cvd", "Embolic stroke", id="embolic"),
    pytest.param(
        "connective-tissue", "Systemic lupus erythematosus with organ involvement", id="sle"
    ),
    pytest.param("hemiplegia", "Spastic hemiplegia", id="spastic"),
    pytest.param(
        "hiv", "Human immunodeficiency virus infection with opportunistic infection", id="hiv-oi"
    ),
]


@pytest.mark.parametrize(("category", "display"), UNLISTED)
def test_unlisted_descendants_are_recognised_by_their_terms(category: str, display: str) -> None:
    """A SNOMED CT code not in the list is placed by its preferred term and reported as such."""
    condition = coded((SCT, "999999999", display))
    assert charlson_table().concept(SCT, "999999999") is None
    detail = charlson_detail([condition], weights="lace")
    assert detail.categories == (category,)
    assert detail.by_text == ("Condition/c1",)
    assert detail.unrecognised == ()


@pytest.mark.parametrize(
    "display",
    [
        # situations and findings about a disease are not the disease
        pytest.param("History of malignant neoplasm of breast", id="history"),
        pytest.param("Family history of heart failure", id="family"),
        pytest.param("Suspected lung cancer", id="suspected"),
        pytest.param("At risk of heart failure", id="at-risk"),
        pytest.param("Screening for malignant neoplasm of colon", id="screening"),
        # look-alikes outside Quan's lists
        pytest.param("Benign neoplasm of colon", id="benign"),
        pytest.param("Carcinoma in situ of breast", id="in-situ"),
        pytest.param("Basal cell carcinoma of skin", id="bcc"),
        pytest.param("Prediabetes", id="prediabetes"),
        pytest.param("Gestational diabetes mellitus", id="gestational"),
        pytest.param("Diabetes insipidus", id="insipidus"),
        pytest.param("Acute kidney injury", id="aki"),
        pytest.param("Acute renal failure syndrome", id="arf"),
        pytest.param("Malignant hypertension", id="malignant-hypertension"),
        pytest.param("Hemiplegic migraine", id="migraine"),
        pytest.param("Coronary arteriosclerosis", id="cad"),
        pytest.param("Essential hypertension", id="hypertension"),
    ],
)
def test_look_alikes_do_not_count(display: str) -> None:
    """Texts that mention a category's words but are not its disease give no category."""
    assert charlson([coded((SCT, "999999999", display))]) == (0, ())


def test_every_listed_concept_is_placed_by_its_target() -> None:
    """Each listed concept's categories are those of its ICD-10-CM target under Quan's
    prefixes, unless the file names a category (with its reason); the fallback terms agree
    with the list on every listed concept's display."""
    table = charlson_table()
    assert len(table.concepts) >= 200
    for concept in table.concepts.values():
        if concept.target is not None and table.icd10_categories(concept.target):
            by_target = table.icd10_categories(concept.target)
            assert concept.categories in (by_target, concept.categories)
        by_text = table.apply_hierarchy(set(table.categories_of_text(concept.display or "")))
        assert by_text == table.apply_hierarchy(set(concept.categories)), concept
    named = {
        c.code
        for c in table.concepts.values()
        if c.categories != (table.icd10_categories(c.target) if c.target else ())
    }
    # the documented exceptions: C80.1 (primary, unspecified), D49.59 read as C61, J98.9
    assert named == {"363346000", "17097001"}


def test_every_category_has_snomed_concepts_and_terms() -> None:
    """All 17 categories are reachable from SNOMED CT, by list and by terms."""
    table = charlson_table()
    for category in table.categories:
        assert category.snomed, category.key
        assert table.terms.get(category.key), category.key


def test_icd10_cm_coding_decides_over_snomed() -> None:
    """Dual-coded Conditions are read from the ICD-10-CM coding only (Quan's algorithm)."""
    hf_but_hypertension = coded((SCT, "84114007", "Heart failure"), (ICD10CM, "I10", None))
    assert charlson([hf_but_hypertension]) == (0, ())
    assert classify_condition(hf_but_hypertension).by == "icd10"
    hypertension_but_hf = coded(
        (SCT, "59621000", "Essential hypertension"), (ICD10CM, "I50.9", None)
    )
    assert charlson([hypertension_but_hf], weights="lace") == (2, ("chf",))


def test_listed_code_wins_over_its_display() -> None:
    """A listed code is read by its target even when the display says something else."""
    condition = coded((SCT, "59621000", "Heart failure (mistyped display)"))
    assert charlson([condition]) == (0, ())
    assert classify_condition(condition).by == "code"


def test_code_text_alone_is_searched() -> None:
    """A Condition with only code.text is placed by its text."""
    condition = {
        "resourceType": "Condition",
        "id": "t",
        "code": {"text": "Congestive heart failure"},
    }
    assert charlson([condition], weights="lace") == (2, ("chf",))


def test_unrecognised_codes_are_reported_with_system_code_and_display() -> None:
    """What no table recognises is listed, once, with the Condition it came from; recognised
    Conditions (even non-Charlson ones) are not."""
    local = coded((LOCAL, "HF-07", "Heart failure (local)"), cid="a")
    unknown = coded((SCT, "999999999", "Xyzzy syndrome"), cid="b")
    known = coded((SCT, "59621000", "Essential hypertension"), cid="c")
    icd = coded((ICD10CM, "J02.9", None), cid="d")
    text_only = {"resourceType": "Condition", "id": "e", "code": {"text": "Bad knees"}}
    detail = charlson_detail([local, unknown, known, icd, text_only], weights="lace")
    assert detail.points == 0
    assert [(u.condition, u.system, u.code, u.display) for u in detail.unrecognised] == [
        ("Condition/a", LOCAL, "HF-07", "Heart failure (local)"),
        ("Condition/b", SCT, "999999999", "Xyzzy syndrome"),
        ("Condition/e", None, None, "Bad knees"),
    ]


def test_lace_result_lists_unrecognised_and_weights() -> None:
    """The LACE result names the unrecognised codes and carries LACE's weight table."""
    encounter = {
        "resourceType": "Encounter",
        "id": "idx",
        "status": "finished",
        "class": {"code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-03-01T10:00:00Z", "end": "2024-03-03T10:00:00Z"},
    }
    result = lace(encounter, conditions=[coded((LOCAL, "HF-07", "Heart failure (local)"))])
    assert result.components["C"] == 0
    assert result.as_dict()["unrecognised"] == [
        {
            "condition": "Condition/c1",
            "system": LOCAL,
            "code": "HF-07",
            "display": "Heart failure (local)",
        }
    ]
    weights = result.charlson_weights
    # LACE's own weights (published LACE sheet): CHF 2, dementia 3, metastatic 6, HIV 4
    assert (weights["chf"], weights["dementia"], weights["metastatic"], weights["hiv"]) == (
        2,
        3,
        6,
        4,
    )
    assert len(weights) == 17


@pytest.mark.usefixtures("tmp_mappings")
def test_a_local_code_added_to_the_mappings_counts() -> None:
    """The README's example: a local problem-list code with its ICD-10-CM target."""
    path = codes_module.mappings_dir() / CHARLSON_SNOMED_FILE
    path.write_text(
        path.read_text().replace(
            "local: []",
            "local:\n"
            f'  - {{system: "{LOCAL}", code: "HF-07", icd10: I50.9, display: "Heart failure"}}',
        )
    )
    detail = charlson_detail([coded((LOCAL, "HF-07", None))], weights="lace")
    assert (detail.points, detail.categories, detail.unrecognised) == (2, ("chf",), ())


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # a concept needs a target or a category
        pytest.param(
            '"84114007": {icd10: I50.9, display: Heart failure}',
            '"84114007": {display: Heart failure}',
            r"concepts\.84114007: give icd10",
            id="no-target",
        ),
        # a named category must exist
        pytest.param(
            "category: malignancy, display: Malignant neoplastic disease",
            "category: cancer, display: Malignant neoplastic disease",
            r"concepts\.363346000\.category: unknown category 'cancer'",
            id="unknown-category",
        ),
        # terms must be regular expressions
        pytest.param(
            "    - '\\bdementia\\b'",
            "    - '(dementia'",
            r"terms\.dementia\[0\]: not a regular expression",
            id="bad-regex",
        ),
    ],
)
@pytest.mark.usefixtures("tmp_mappings")
def test_bad_snomed_table_fails_naming_the_key(old: str, new: str, message: str) -> None:
    """A SNOMED CT table that does not validate raises ConfigError with the file and key."""
    path = codes_module.mappings_dir() / CHARLSON_SNOMED_FILE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message):
        charlson_table()


def test_fully_specified_names_match_like_preferred_terms() -> None:
    """A display carrying its semantic tag ("(disorder)") is read without it."""
    for display, category in (
        ("Cardiomyopathy (disorder)", "chf"),
        ("Chronic kidney disease stage 3B (disorder)", "renal"),
        ("Disorder of liver (disorder)", "mild-liver"),
    ):
        assert charlson([coded((SCT, "999999999", display))])[1] == (category,)
    assert charlson([coded((SCT, "999999999", "History of malignant neoplasm (situation)"))]) == (
        0,
        (),
    )


def test_code_systems_named_by_oid_are_read() -> None:
    """SNOMED CT, ICD-10-CM and ICD-10 given by their OIDs (CDA-derived data) are read as
    their URIs."""
    assert charlson([coded(("urn:oid:2.16.840.1.113883.6.96", "84114007", None))]) == (1, ("chf",))
    assert charlson([coded(("urn:oid:2.16.840.1.113883.6.90", "N18.4", None))]) == (2, ("renal",))
    assert charlson([coded(("urn:oid:2.16.840.1.113883.6.3", "F00.1", None))]) == (
        1,
        ("dementia",),
    )
