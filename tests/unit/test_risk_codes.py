"""Loading the risk code tables from mappings/: location, ranges, caching, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbridge.errors import ConfigError
from fhirbridge.risk.codes import (
    CHARLSON_FILE,
    RISK_INPUTS_FILE,
    charlson_table,
    mappings_dir,
    normalise_icd10,
    risk_inputs,
)
from tests.unit._data import REPO_MAPPINGS


def test_mappings_dir_is_the_source_checkout_folder() -> None:
    """In a source checkout the tables are read from the repository's mappings/."""
    assert mappings_dir() == REPO_MAPPINGS


def test_tables_are_cached() -> None:
    """The tables are parsed once and shared."""
    assert charlson_table() is charlson_table()
    assert risk_inputs() is risk_inputs()


def test_ranges_expand_to_every_prefix() -> None:
    """'K70.0-K70.3' and 'C00-C26' become every prefix in between, dots dropped."""
    table = charlson_table()
    mild = table.category("mild-liver").icd10_prefixes
    assert {"K700", "K701", "K702", "K703"} <= set(mild)
    assert "K704" not in mild
    malignancy = table.category("malignancy").icd10_prefixes
    assert malignancy[:3] == ("C00", "C01", "C02")
    assert "C26" in malignancy
    assert "C27" not in malignancy


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        # dots and case do not matter
        pytest.param("e11.65", "E1165", id="dotted-lower"),
        # spaces are dropped
        pytest.param(" I50 .9", "I509", id="spaces"),
    ],
)
def test_normalise_icd10(raw: str, normal: str) -> None:
    """ICD-10 codes compare without dots, spaces or case."""
    assert normalise_icd10(raw) == normal


def test_risk_inputs_hold_the_documented_codes() -> None:
    """The shipped inputs: LOINC codes, thresholds, acuity codes, ED link window."""
    inputs = risk_inputs()
    assert inputs.haemoglobin.codes == {"718-7"}
    assert inputs.sodium.codes == {"2951-2", "2947-0"}
    assert (inputs.haemoglobin.threshold, inputs.sodium.threshold) == (12, 135)
    assert {code for _, code in inputs.priorities} == {"EM", "S", "UR"}
    assert {code for _, code in inputs.admit_sources} == {"emd"}
    assert inputs.ed_link_window.total_seconds() == 12 * 3600


def test_bad_range_names_file_and_key(tmp_mappings: Path) -> None:
    """A range that is not of one letter and one width fails with the file and the key."""
    path = tmp_mappings / CHARLSON_FILE
    text = path.read_text().replace("icd10: [G45, G46, H34.0, I60-I69]", "icd10: [I60-J69]")
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"charlson-icd10\.yaml: categories\.cvd\.icd10"):
        charlson_table()


def test_missing_weight_names_file_and_key(tmp_mappings: Path) -> None:
    """A category without a LACE weight fails at load time, naming the key."""
    path = tmp_mappings / CHARLSON_FILE
    path.write_text(
        path.read_text().replace("weights: {charlson: 1, lace: 3}", "weights: {charlson: 1}", 1)
    )
    with pytest.raises(ConfigError, match=r"categories\.dementia\.weights\.lace"):
        charlson_table()


def test_unknown_category_in_hierarchy_fails(tmp_mappings: Path) -> None:
    """The hierarchy may only name categories of the table."""
    path = tmp_mappings / CHARLSON_FILE
    path.write_text(path.read_text().replace("metastatic: [malignancy]", "metastatic: [cancer]"))
    with pytest.raises(ConfigError, match="unknown category 'cancer'"):
        charlson_table()


def test_bad_lab_threshold_fails(tmp_mappings: Path) -> None:
    """A threshold that is not a number fails, naming the key."""
    path = tmp_mappings / RISK_INPUTS_FILE
    path.write_text(path.read_text().replace("threshold: 135", "threshold: low"))
    with pytest.raises(ConfigError, match=r"laboratory\.sodium\.threshold"):
        risk_inputs()


def test_unreadable_yaml_fails(tmp_mappings: Path) -> None:
    """A file that is not YAML fails with its path."""
    (tmp_mappings / RISK_INPUTS_FILE).write_text("acuity: [unclosed\n")
    with pytest.raises(ConfigError, match=r"risk-inputs\.yaml: cannot be read"):
        risk_inputs()


def test_edited_tables_are_used(tmp_mappings: Path) -> None:
    """An engineer's edit of the data changes the score without a code change."""
    path = tmp_mappings / CHARLSON_FILE
    path.write_text(
        path.read_text().replace(
            "weights: {charlson: 2, lace: 0}", "weights: {charlson: 2, lace: 1}"
        )
    )
    assert charlson_table().category("hemiplegia").weights["lace"] == 1
