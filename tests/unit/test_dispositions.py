"""Discharge disposition codes to groups: fhirbridge.rules.dispositions + its shipped table."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbridge.errors import RuleError
from fhirbridge.rules import DispositionTable, disposition_group, mappings_dir
from fhirbridge.rules.dispositions import BASE_SYSTEM, GROUPS

NUBC_THO = "http://terminology.hl7.org/CodeSystem/nubc-UB92"
NUBC_US_CORE = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
NUBC_SYNTHEA = "http://www.nubc.org/patient-discharge"
V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("home", "community"),
        ("alt-home", "community"),
        ("snf", "post-acute"),
        ("rehab", "post-acute"),
        ("long", "post-acute"),
        ("psy", "post-acute"),
        ("other-hcf", "transfer"),
        ("hosp", "hospice"),  # hospice, not hospital
        ("aadvice", "against-advice"),
        ("exp", "death"),
        ("oth", "unknown"),
    ],
)
def test_every_base_code(code: str, group: str) -> None:
    """Each FHIR discharge-disposition code maps to its group."""
    assert disposition_group(BASE_SYSTEM, code) == group


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("01", "community"),  # home or self care
        ("1", "community"),  # Da Vinci's example sends "1"
        ("02", "transfer"),  # short-term hospital
        ("03", "post-acute"),  # SNF
        ("04", "post-acute"),  # ICF
        ("05", "transfer"),  # other institution
        ("06", "community"),  # home health
        ("07", "against-advice"),
        ("20", "death"),
        ("21", "unknown"),  # court / law enforcement
        ("30", "unknown"),  # still a patient
        ("40", "death"),
        ("41", "death"),
        ("42", "death"),
        ("43", "transfer"),  # federal hospital
        ("50", "hospice"),
        ("51", "hospice"),
        ("61", "post-acute"),  # swing bed
        ("62", "post-acute"),  # IRF
        ("63", "post-acute"),  # LTCH
        ("64", "post-acute"),  # nursing facility
        ("65", "post-acute"),  # psychiatric
        ("66", "transfer"),  # critical access hospital
        ("69", "transfer"),
        ("70", "transfer"),
        ("99", "unknown"),  # not a NUBC code
    ],
)
def test_nubc_codes(code: str, group: str) -> None:
    """NUBC UB-04 patient status codes map to their groups."""
    assert disposition_group(NUBC_THO, code) == group


PLANNED_READMISSION_BASES = {
    "81": "01",
    "82": "02",
    "83": "03",
    "84": "04",
    "85": "05",
    "86": "06",
    "87": "21",
    "88": "43",
    "89": "61",
    "90": "62",
    "91": "63",
    "92": "64",
    "93": "65",
    "94": "66",
    "95": "70",
}


@pytest.mark.parametrize(("planned", "base"), sorted(PLANNED_READMISSION_BASES.items()))
def test_planned_readmission_variants_map_like_their_base(planned: str, base: str) -> None:
    """81-95 ("with a planned readmission") group like the destination they extend."""
    assert disposition_group(NUBC_THO, planned) == disposition_group(NUBC_THO, base)


@pytest.mark.parametrize(
    "system",
    [
        NUBC_THO,
        NUBC_US_CORE,
        NUBC_SYNTHEA,
        "https://www.nubc.org/patient-discharge",  # scheme does not matter
        "http://www.nubc.org/patient-discharge/",  # nor a trailing slash
        "urn:oid:2.16.840.1.113883.6.301.5",
        V2_0112,
    ],
)
def test_nubc_is_read_under_every_uri_feeds_use(system: str) -> None:
    """US Core, Synthea, THO, the OID and v2 table 0112 all carry the NUBC codes."""
    assert disposition_group(system, "01") == "community"
    assert disposition_group(system, "03") == "post-acute"
    assert disposition_group(system, "50") == "hospice"


@pytest.mark.parametrize(
    ("system", "code", "group"),
    [
        ("http://example.org/local-codes", "home", "community"),  # unknown system, base code
        ("http://example.org/local-codes", "snf", "post-acute"),
        (None, "hosp", "hospice"),  # no system, base code
        ("", "exp", "death"),
        (None, "01", "unknown"),  # numeric code without a system: not guessed
        ("http://example.org/local-codes", "zz", "unknown"),
        (BASE_SYSTEM, "01", "unknown"),  # known system, code it does not have
        (NUBC_THO, "home", "unknown"),
        (BASE_SYSTEM, None, "unknown"),  # missing code
        (BASE_SYSTEM, "  ", "unknown"),
        (None, None, "unknown"),
        (BASE_SYSTEM, " HOME ", "community"),  # stray case and spaces are forgiven
    ],
)
def test_fallbacks_and_unknowns(system: str | None, code: str | None, group: str) -> None:
    """Unknown systems fall back to base codes; anything unmatched is unknown."""
    assert disposition_group(system, code) == group


def test_every_group_of_the_shipped_table_is_a_known_group() -> None:
    """The shipped table only produces the documented groups, and all of them appear."""
    table = DispositionTable.load()
    produced = {g for t in table.tables for g in t.codes.values()}
    assert produced == set(GROUPS)
    assert table.source == mappings_dir() / "dispositions.yaml"


def test_load_a_custom_table(tmp_path: Path) -> None:
    """A site table replaces the shipped one; unquoted numeric codes are text too."""
    path = tmp_path / "d.yaml"
    path.write_text(
        "version: 1\n"
        "tables:\n"
        "  - name: local\n"
        "    systems: [http://example.org/disp]\n"
        "    pad: 2\n"
        "    codes: {1: community, H: hospice}\n"
        "    same_as: {9: 1}\n",
        encoding="utf-8",
    )
    table = DispositionTable.load(path)
    assert table.group("http://example.org/disp", "01") == "community"
    assert table.group("http://example.org/disp", "9") == "community"
    assert table.group("http://example.org/disp", "h") == "hospice"
    assert table.group(None, "home") == "unknown"  # no fallback table in this file


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "    codes: {home: comunity}\n",
            "d.yaml:5: tables[0].codes.home: 'comunity' is not one of community, post-acute",
        ),
        (
            "    codes: {home: community}\n    same_as: {x: y}\n",
            "d.yaml:6: tables[0].same_as: 'x' points at 'y', which is not in codes",
        ),
        (
            "    codes: {home: community}\n    colour: red\n",
            "d.yaml:6: tables[0]: unknown key 'colour'",
        ),
        (
            "    codes: {home: community}\n"
            "  - name: again\n"
            "    systems: [https://example.org/disp/]\n"
            "    codes: {x: death}\n",
            "d.yaml:7: tables[1].systems[0]: 'https://example.org/disp/' is already served",
        ),
    ],
)
def test_bad_table_files_name_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, expected: str
) -> None:
    """A broken disposition table fails at load time with file, line and key path."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.yaml"
    path.write_text(
        "version: 1\ntables:\n  - name: local\n    systems: [http://example.org/disp]\n" + body,
        encoding="utf-8",
    )
    with pytest.raises(RuleError) as info:
        DispositionTable.load(path)
    assert str(info.value).startswith(expected)
