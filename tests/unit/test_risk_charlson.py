"""Charlson comorbidity scoring: categories, both weight tables, hierarchy, statuses, age."""

from __future__ import annotations

import pytest

from fhirbridge.risk import charlson
from fhirbridge.risk.codes import charlson_table
from fhirbridge.testing.builders import SNOMED as SCT
from fhirbridge.testing.builders import condition

ICD10 = "http://hl7.org/fhir/sid/icd-10"


# (category, an ICD-10-CM code in it, a SNOMED CT code in it, Charlson weight, LACE weight)
CATEGORIES = [
    # myocardial infarction: 1 in both tables
    pytest.param("mi", "I21.4", "22298006", 1, 1, id="mi"),
    # congestive heart failure: Charlson 1, LACE 2
    pytest.param("chf", "I50.9", "42343007", 1, 2, id="chf"),
    # peripheral vascular disease: 1 in both
    pytest.param("pvd", "I73.9", "400047006", 1, 1, id="pvd"),
    # cerebrovascular disease: 1 in both
    pytest.param("cvd", "I63.9", "230690007", 1, 1, id="cvd"),
    # dementia: Charlson 1, LACE 3
    pytest.param("dementia", "F03.90", "52448006", 1, 3, id="dementia"),
    # chronic pulmonary disease: Charlson 1, LACE 2 (LACE's "COPD")
    pytest.param("chronic-pulmonary", "J44.9", "13645005", 1, 2, id="chronic-pulmonary"),
    # connective tissue disease: Charlson 1, LACE 3
    pytest.param("connective-tissue", "M06.9", "69896004", 1, 3, id="connective-tissue"),
    # peptic ulcer disease: 1 in both
    pytest.param("peptic-ulcer", "K25.9", "13200003", 1, 1, id="peptic-ulcer"),
    # mild liver disease: Charlson 1, LACE 2
    pytest.param("mild-liver", "K74.60", "19943007", 1, 2, id="mild-liver"),
    # diabetes without complication: 1 in both
    pytest.param("diabetes", "E11.9", "44054006", 1, 1, id="diabetes"),
    # diabetes with end-organ damage: 2 in both
    pytest.param("diabetes-complicated", "E11.22", "127013003", 2, 2, id="diabetes-complicated"),
    # hemiplegia/paraplegia: Charlson 2, not in LACE's list (0)
    pytest.param("hemiplegia", "G81.90", "50582007", 2, 0, id="hemiplegia"),
    # moderate/severe renal disease: 2 in both
    pytest.param("renal", "N18.4", "431857002", 2, 2, id="renal"),
    # any malignancy incl. leukaemia and lymphoma: 2 in both
    pytest.param("malignancy", "C34.90", "363346000", 2, 2, id="malignancy"),
    # moderate/severe liver disease: Charlson 3, LACE 4
    pytest.param("severe-liver", "K72.90", "13920009", 3, 4, id="severe-liver"),
    # metastatic solid tumour: 6 in both
    pytest.param("metastatic", "C78.7", "128462008", 6, 6, id="metastatic"),
    # AIDS/HIV: Charlson 6 (AIDS), LACE 4 (HIV)
    pytest.param("hiv", "B20", "86406008", 6, 4, id="hiv"),
]


@pytest.mark.parametrize(("category", "icd", "sct", "charlson_w", "lace_w"), CATEGORIES)
def test_icd10_code_scores_its_category_in_both_tables(
    category: str, icd: str, sct: str, charlson_w: int, lace_w: int
) -> None:
    """An ICD-10-CM coded Condition puts its category's weight of each table."""
    assert charlson([condition(icd)], weights="charlson") == (charlson_w, (category,))
    assert charlson([condition(icd)], weights="lace") == (lace_w, (category,))


@pytest.mark.parametrize(("category", "icd", "sct", "charlson_w", "lace_w"), CATEGORIES)
def test_snomed_code_scores_its_category_in_both_tables(
    category: str, icd: str, sct: str, charlson_w: int, lace_w: int
) -> None:
    """A SNOMED CT coded Condition puts its category's weight of each table."""
    assert charlson([condition(sct, SCT)], weights="charlson") == (charlson_w, (category,))
    assert charlson([condition(sct, SCT)], weights="lace") == (lace_w, (category,))


def test_the_table_has_the_seventeen_categories() -> None:
    """The shipped table holds exactly Quan's 17 Charlson categories."""
    keys = [c.key for c in charlson_table().categories]
    assert keys == [
        "mi",
        "chf",
        "pvd",
        "cvd",
        "dementia",
        "chronic-pulmonary",
        "connective-tissue",
        "peptic-ulcer",
        "mild-liver",
        "diabetes",
        "diabetes-complicated",
        "hemiplegia",
        "renal",
        "malignancy",
        "severe-liver",
        "metastatic",
        "hiv",
    ]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # I42.4 (endocardial fibroelastosis) is outside CHF's I42.5-I42.9 range
        pytest.param("I42.4", (), id="I42.4-not-chf"),
        # I42.5 opens the range
        pytest.param("I42.5", ("chf",), id="I42.5-chf"),
        # K70.3 alcoholic cirrhosis is mild liver disease
        pytest.param("K70.30", ("mild-liver",), id="K70.3-mild"),
        # K70.4 alcoholic hepatic failure is moderate/severe
        pytest.param("K70.40", ("severe-liver",), id="K70.4-severe"),
        # E11.6x counts as uncomplicated in Quan's algorithm
        pytest.param("E11.65", ("diabetes",), id="E11.6-uncomplicated"),
        # E11.5x (circulatory complications) is with end-organ damage
        pytest.param("E11.51", ("diabetes-complicated",), id="E11.5-complicated"),
        # C43 melanoma is a malignancy
        pytest.param("C43.9", ("malignancy",), id="C43-melanoma"),
        # C44 other skin cancer is not
        pytest.param("C44.91", (), id="C44-skin-excluded"),
        # C80 ends the metastatic range
        pytest.param("C80.1", ("metastatic",), id="C80-metastatic"),
        # C81 lymphoma is a malignancy
        pytest.param("C81.90", ("malignancy",), id="C81-lymphoma"),
        # I25.2 old MI counts, I25.1 atherosclerotic heart disease does not
        pytest.param("I25.2", ("mi",), id="I25.2-old-mi"),
        pytest.param("I25.10", (), id="I25.1-not-mi"),
        # B23 is not in Quan's HIV list
        pytest.param("B23.8", (), id="B23-not-hiv"),
        # undotted and lower case codes match too
        pytest.param("i509", ("chf",), id="undotted-lower"),
        # hypertension is not a Charlson category
        pytest.param("I10", (), id="hypertension"),
    ],
)
def test_icd10_prefix_edges(code: str, expected: tuple[str, ...]) -> None:
    """Codes at the edges of Quan's ranges fall in (or out of) the right category."""
    assert charlson([condition(code)])[1] == expected


def test_who_icd10_system_is_read_too() -> None:
    """WHO ICD-10 codings use the same prefixes (F00 exists only there)."""
    assert charlson([condition("F00.1", ICD10)]) == (1, ("dementia",))


def test_unknown_system_is_ignored() -> None:
    """A code in a system the table does not know scores nothing."""
    assert charlson([condition("I50.9", "http://example.org/local")]) == (0, ())


def test_snomed_codes_match_exactly() -> None:
    """SNOMED CT codes match whole codes, not prefixes."""
    assert charlson([condition("4234300", SCT)]) == (0, ())


def test_no_conditions_scores_zero() -> None:
    """Nothing in, 0 and no categories out."""
    assert charlson([]) == (0, ())


def test_a_category_counts_once() -> None:
    """Several Conditions in one category give its weight once."""
    conditions = [condition("I50.9", rid="a"), condition("84114007", SCT, rid="b")]
    assert charlson(conditions, weights="lace") == (2, ("chf",))


def test_categories_add_up_in_table_order() -> None:
    """Different categories add their weights; categories come back in table order."""
    conditions = [condition("N18.4", rid="a"), condition("I21.4", rid="b")]
    assert charlson(conditions) == (3, ("mi", "renal"))


@pytest.mark.parametrize(
    ("codes", "kept", "charlson_points", "lace_points"),
    [
        # severe liver disease supersedes mild: 3 not 4 (Charlson), 4 not 6 (LACE)
        pytest.param(["K70.30", "K72.90"], ("severe-liver",), 3, 4, id="liver"),
        # diabetes with end-organ damage supersedes uncomplicated: 2 not 3
        pytest.param(["E11.9", "E11.22"], ("diabetes-complicated",), 2, 2, id="diabetes"),
        # metastatic solid tumour supersedes any malignancy: 6 not 8
        pytest.param(["C34.90", "C78.7"], ("metastatic",), 6, 6, id="tumour"),
        # the lower categories alone still count
        pytest.param(
            ["K70.30", "E11.9", "C34.90"],
            ("mild-liver", "diabetes", "malignancy"),
            4,
            5,
            id="lower-only",
        ),
    ],
)
def test_hierarchy_counts_the_higher_category_only(
    codes: list[str], kept: tuple[str, ...], charlson_points: int, lace_points: int
) -> None:
    """When a category and one it supersedes are both present, only the higher counts."""
    conditions = [condition(code, rid=str(i)) for i, code in enumerate(codes)]
    assert charlson(conditions) == (charlson_points, kept)
    assert charlson(conditions, weights="lace") == (lace_points, kept)


@pytest.mark.parametrize(
    ("clinical", "verification", "counts"),
    [
        # no status at all: counts
        pytest.param(None, None, True, id="no-status"),
        # active, recurrence and relapse count
        pytest.param("active", None, True, id="active"),
        pytest.param("recurrence", None, True, id="recurrence"),
        pytest.param("relapse", None, True, id="relapse"),
        # inactive, remission and resolved do not
        pytest.param("inactive", None, False, id="inactive"),
        pytest.param("remission", None, False, id="remission"),
        pytest.param("resolved", None, False, id="resolved"),
        # refuted and entered-in-error never count
        pytest.param("active", "refuted", False, id="refuted"),
        pytest.param("active", "entered-in-error", False, id="entered-in-error"),
        # unconfirmed and confirmed diagnoses count
        pytest.param("active", "unconfirmed", True, id="unconfirmed"),
        pytest.param("active", "confirmed", True, id="confirmed"),
    ],
)
def test_only_current_diagnoses_count(
    clinical: str | None, verification: str | None, counts: bool
) -> None:
    """clinicalStatus and verificationStatus decide whether a Condition counts."""
    result = charlson([condition("I50.9", clinical=clinical, verification=verification)])
    assert result == ((1, ("chf",)) if counts else (0, ()))


@pytest.mark.parametrize(
    ("age", "points"),
    [
        # below 50: nothing
        pytest.param(49, 0, id="49"),
        # 50-59: 1
        pytest.param(50, 1, id="50"),
        pytest.param(59, 1, id="59"),
        # 60-69: 2
        pytest.param(60, 2, id="60"),
        pytest.param(69, 2, id="69"),
        # 70-79: 3
        pytest.param(70, 3, id="70"),
        pytest.param(79, 3, id="79"),
        # 80 and over: 4
        pytest.param(80, 4, id="80"),
        pytest.param(101, 4, id="101"),
    ],
)
def test_age_points(age: int, points: int) -> None:
    """Given an age, the original index adds its age points to the comorbidity points."""
    assert charlson([condition("I50.9")], age=age) == (1 + points, ("chf",))


def test_unknown_weight_table_is_refused() -> None:
    """Only the charlson and lace tables exist."""
    with pytest.raises(ValueError, match="weights"):
        charlson([], weights="elixhauser")  # type: ignore[arg-type]
