"""Loading rule packs (fhirbridge.rules.loader): bad input fails with file:line, rule and key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from fhirbridge.errors import ConfigError, RuleError
from fhirbridge.rules import load_rules, mappings_dir
from fhirbridge.rules.model import OwnerSource
from tests._builders.rules import GOOD


@pytest.fixture
def pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pack path in a temporary working directory, so messages name it ``pack.yaml``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "pack.yaml"


def _error(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules([path])
    return str(info.value)


def test_the_good_pack_loads(pack: Path) -> None:
    """The baseline used by the error cases is itself valid."""
    pack.write_text(GOOD, encoding="utf-8")
    loaded = load_rules([pack])
    assert [r.id for r in loaded.rules] == ["discharge-home"]
    assert loaded.codes == {"c1": "One"}
    assert loaded.sources == (pack,)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # a disposition group that does not exist
        (
            "disposition_group: community",
            "disposition_group: hom",
            "pack.yaml:8: rule 'discharge-home': when.disposition_group: 'hom' is not one of "
            "community, post-acute, transfer, hospice, against-advice, death, unknown",
        ),
        # same, inside a list: the path names the item
        (
            "disposition_group: community",
            "disposition_group: [community, hom]",
            "pack.yaml:8: rule 'discharge-home': when.disposition_group: 'hom' is not one of",
        ),
        # a transition kind that does not exist
        (
            "kind: discharge",
            "kind: dischrge",
            "pack.yaml:7: rule 'discharge-home': when.kind: 'dischrge' is not one of admission,",
        ),
        # an unknown condition key
        (
            "      disposition_group: community\n",
            "      disposition_group: community\n      colour: red\n",
            "pack.yaml:9: rule 'discharge-home': when: unknown key 'colour'",
        ),
        # an unknown action
        (
            "create-task:",
            "update-careplan:",
            "pack.yaml:10: rule 'discharge-home': then[0]: unknown key 'update-careplan'",
        ),
        # a bad priority
        (
            "due: {days: 1}}",
            "due: {days: 1}, priority: high}",
            "pack.yaml:10: rule 'discharge-home': then[0].create-task.priority: 'high' is not "
            "one of routine, urgent, asap, stat",
        ),
        # a missing required field
        (
            "code: c1, ",
            "",
            "pack.yaml:10: rule 'discharge-home': then[0].create-task: missing required key 'code'",
        ),
        # a missing rule id: the rule is named by position
        (
            "  - id: discharge-home\n    when:",
            "  - when:",
            "pack.yaml:5: rule #1: missing required key 'id'",
        ),
        # a missing `when.kind`
        (
            "      kind: discharge\n",
            "",
            "pack.yaml:6: rule 'discharge-home': when: missing required key 'kind'",
        ),
        # two ways of saying when a Task is due
        (
            "due: {days: 1}",
            "due: {days: 1, business_days: 2}",
            "pack.yaml:10: rule 'discharge-home': then[0].create-task.due: give exactly one of",
        ),
        # a negative number of days
        (
            "due: {days: 1}",
            "due: {days: -1}",
            "then[0].create-task.due.days: must be at least 0, got -1",
        ),
        # an owner source that does not exist
        (
            "due: {days: 1}}",
            "due: {days: 1}, owner: [default, gp]}",
            "pack.yaml:10: rule 'discharge-home': then[0].create-task.owner[1]: 'gp' is not an "
            "owner source",
        ),
        # a task code that no pack defines
        (
            "code: c1",
            "code: c2",
            "pack.yaml:10: rule 'discharge-home': then[0].create-task.code: 'c2' is not defined "
            "under codes (c1)",
        ),
        # a bad risk condition, reported under the key as written
        (
            "disposition_group: community",
            "risk.lace.tier: {nott: [high]}",
            "pack.yaml:8: rule 'discharge-home': when.risk.lace.tier: expected a list or "
            "{not: [...]}",
        ),
        # the nested risk form is not the format
        (
            "disposition_group: community",
            "risk: {lace: [high]}",
            "pack.yaml:6: rule 'discharge-home': when: unknown key 'risk'",
        ),
        # a bad cancel scope and status
        (
            "- create-task: {id: a, code: c1, due: {days: 1}}",
            "- cancel-tasks: {scope: world, reason: x}",
            "pack.yaml:10: rule 'discharge-home': then[0].cancel-tasks.scope: 'world' is not one "
            "of patient, encounter",
        ),
        (
            "- create-task: {id: a, code: c1, due: {days: 1}}",
            "- cancel-tasks: {scope: patient, status: done, reason: x}",
            "then[0].cancel-tasks.status: 'done' is not one of cancelled, entered-in-error",
        ),
        # two actions in one item
        (
            "- create-task: {id: a, code: c1, due: {days: 1}}",
            "- {create-task: {id: a, code: c1, due: {days: 1}}, complete-tasks: {reason: x}}",
            "pack.yaml:10: rule 'discharge-home': then[0]: one action per item",
        ),
        # no actions at all
        (
            "    then:\n      - create-task: {id: a, code: c1, due: {days: 1}}\n",
            "    then: []\n",
            "pack.yaml:9: rule 'discharge-home': then: must not be empty",
        ),
        # two actions of one rule with one id
        (
            "- create-task: {id: a, code: c1, due: {days: 1}}",
            "- create-task: {id: a, code: c1, due: {days: 1}}\n"
            "      - escalate: {id: a, code: c1, due: {days: 1}}",
            "pack.yaml:11: rule 'discharge-home': then[1].escalate.id: duplicate action id 'a'",
        ),
        # a duplicated YAML key (PyYAML alone would keep the last silently)
        (
            "      kind: discharge\n",
            "      kind: discharge\n      kind: death\n",
            "pack.yaml:8: rule 'discharge-home': when: duplicate key 'kind'",
        ),
        # inverted age bounds
        (
            "disposition_group: community",
            "age: {min: 80, max: 18}",
            "pack.yaml:8: rule 'discharge-home': when.age: min 80 is above max 18",
        ),
        # a bad time zone and weekend in defaults
        (
            "version: 1\n",
            "version: 1\ndefaults: {timezone: Mars/Base}\n",
            "pack.yaml:2: defaults.timezone: 'Mars/Base' is not an IANA time zone",
        ),
        (
            "version: 1\n",
            "version: 1\ndefaults: {weekend: [sat, funday]}\n",
            "pack.yaml:2: defaults.weekend: 'funday' is not a day of the week",
        ),
        # the wrong format version, and an unknown top-level key
        ("version: 1", "version: 2", "pack.yaml:1: version: 2 is not one of 1"),
        ("version: 1\n", "version: 1\nextras: 1\n", "pack.yaml:2: unknown key 'extras'"),
        # a code that is not an id
        (
            "  c1: {display: One}\n",
            "  c1: {display: One}\n  bad code: {display: x}\n",
            "pack.yaml:4: codes.bad code: 'bad code' is not an id",
        ),
    ],
)
def test_bad_rules_name_file_line_rule_and_key(
    pack: Path, old: str, new: str, expected: str
) -> None:
    """Each kind of bad input gives one message with file:line, the rule id and the key path."""
    assert old in GOOD
    message = _error(pack, GOOD.replace(old, new, 1))
    assert expected in message, message


def test_duplicate_rule_ids_in_one_file(pack: Path) -> None:
    """A second rule with the same id names both lines."""
    text = (
        GOOD
        + "  - id: discharge-home\n    when: {kind: death}\n    then:\n"
        + ("      - cancel-tasks: {scope: patient, reason: x}\n")
    )
    assert _error(pack, text) == (
        "pack.yaml:11: rule 'discharge-home': id: duplicate rule id (first defined on line 5)"
    )


def test_duplicate_rule_ids_across_files(pack: Path) -> None:
    """Rule ids are unique over every loaded pack; the message names the first place."""
    other = pack.with_name("other.yaml")
    pack.write_text(GOOD, encoding="utf-8")
    other.write_text(GOOD.replace("c1", "c9"), encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules([pack, other])
    assert str(info.value) == (
        "other.yaml:5: rule 'discharge-home': id: duplicate rule id (first defined at pack.yaml:5)"
    )


def test_codes_and_defaults_merge_across_files(pack: Path) -> None:
    """A later pack may use an earlier pack's codes and override its defaults key by key."""
    site = pack.with_name("site.yaml")
    pack.write_text(
        GOOD.replace(
            "codes:",
            "defaults: {timezone: America/New_York, default_owner: Organization/a}\ncodes:",
        ),
        encoding="utf-8",
    )
    site.write_text(
        "version: 1\n"
        "defaults: {default_owner: Organization/b, holidays: [2026-12-25]}\n"
        "rules:\n"
        "  - id: site-rule\n"
        "    when: {kind: admission}\n"
        "    then:\n"
        "      - create-task: {id: x, code: c1, due: {business_days: 1}}\n",
        encoding="utf-8",
    )
    loaded = load_rules([pack, site])
    assert [r.id for r in loaded.rules] == ["discharge-home", "site-rule"]
    assert loaded.defaults.timezone == "America/New_York"
    assert loaded.defaults.default_owner == "Organization/b"
    assert loaded.calendar().holidays == frozenset({date(2026, 12, 25)})
    assert loaded.calendar().tz == "America/New_York"


def test_not_yaml_and_empty_files(pack: Path) -> None:
    """Broken YAML names the line; an empty file says so; a folder is refused."""
    assert _error(pack, GOOD + "  - id: [\n").startswith("pack.yaml:12: not valid YAML")
    assert _error(pack, "").startswith("pack.yaml: the file is empty")
    assert _error(pack, "- 1\n") == "pack.yaml:1: expected a mapping, got [1]"
    with pytest.raises(RuleError, match="is a folder"):
        load_rules([pack.parent])
    with pytest.raises(RuleError, match="cannot read"):
        load_rules([pack.with_name("missing.yaml")])


def test_rule_error_is_a_config_error(pack: Path) -> None:
    """Callers that catch ConfigError also catch bad rules."""
    pack.write_text("version: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_rules([pack])


def test_condition_forms(pack: Path) -> None:
    """Scalars, lists and {not: [...]} all load; owners parse into sources; defaults apply."""
    pack.write_text(
        GOOD.replace(
            "disposition_group: community",
            "disposition_group: {not: [death]}\n"
            "      encounter_class: IMP\n"
            "      risk.lace.tier: [HIGH]\n"
            "      facts: {outcome: completed, planned: true}",
        ).replace(
            "due: {days: 1}}",
            "due: {fact: due, default_business_days: 3}, "
            "owner: [{care_team_role: cm}, general-practitioner, "
            "{reference: Organization/x}, default]}",
        ),
        encoding="utf-8",
    )
    rule = load_rules([pack]).rules[0]
    assert rule.when.disposition_group is not None
    assert rule.when.disposition_group.negate
    assert rule.when.encounter_class is not None
    assert rule.when.encounter_class.values == ("IMP",)
    assert rule.when.risk["lace"].values == ("high",)  # tiers compare case-insensitively
    assert rule.when.facts["planned"].values == ("true",)
    task = rule.then[0].task
    assert task is not None
    assert task.owner == (
        OwnerSource("care-team", "cm"),
        OwnerSource("general-practitioner"),
        OwnerSource("reference", "Organization/x"),
        OwnerSource("default"),
    )
    assert task.careplan is True
    assert task.priority is None  # the plan decides: routine, or urgent for escalations


def test_shipped_pack_loads_with_every_code_displayed() -> None:
    """The shipped pack loads by default, and every Task code it uses has a display."""
    loaded = load_rules()
    assert loaded.sources == (mappings_dir() / "transitional-care.yaml",)
    used = {item.task.code for rule in loaded.rules for item in rule.then if item.task}
    assert used <= set(loaded.codes)
    assert all(loaded.codes[code] for code in used)
    assert len({r.id for r in loaded.rules}) == len(loaded.rules)


def test_shipped_pack_comments_every_rule() -> None:
    """Each shipped rule is preceded by a comment citing its basis."""
    lines = (mappings_dir() / "transitional-care.yaml").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith("  - id: "):
            assert lines[number - 1].lstrip().startswith("#"), line
