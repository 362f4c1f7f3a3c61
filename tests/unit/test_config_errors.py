"""Broken configurations and rule packs: one line naming the file, the key and what to do,
never a traceback from deep inside the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from fhirbridge.config import load_config
from fhirbridge.errors import ConfigError, RuleError
from fhirbridge.rules import load_rules
from tests._builders.rules import GOOD

BASE = "fhir: {base_url: 'https://ehr.example.org/fhir'}\n"


def config_error(tmp_path: Path, text: str) -> str:
    """The message of the ConfigError that loading ``text`` as a config file raises."""
    path = tmp_path / "fhirbridge.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message.removeprefix(str(path))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a port past 65535 in the server URL (was a 141-line OverflowError)
        ("fhir: {base_url: 'http://127.0.0.1:99999/fhir'}", ": fhir.base_url: the port in"),
        # a URL with no host (passed, then failed later without naming the key)
        ("fhir: {base_url: 'http://'}", ": fhir.base_url: 'http://' names no host"),
        ("fhir: {base_url: 'ehr.example.org/fhir'}", ": fhir.base_url: 'ehr.example.org/fhir' is"),
        # a date that is no date (was a ValueError inside the YAML parser)
        (BASE + "engine: {holidays: [2026-13-45]}", ": engine.holidays[0]: Input should be"),
        # a duration past what a date can hold (was an OverflowError in default_since)
        (BASE + "engine: {max_event_age: P99999999D}", ": engine.max_event_age: 99999999 days"),
        (BASE + "engine: {overlap: PT0S}", ": engine.overlap: 0:00:00 is out of range"),
        (BASE + "engine: {max_event_age: fortnight}", ": engine.max_event_age: Input should be"),
        # ports and periods out of range
        (BASE + "receiver: {port: 99999}", ": receiver.port: Input should be less than"),
        (BASE + "receiver: {public_url: 'http://h:70000/'}", ": receiver.public_url: the port"),
        (BASE + "store: {url: 'postgresql://db:99999/x'}", ": store.url: the port"),
        (BASE + "engine: {poll_interval: 1e300}", ": engine.poll_interval: Input should be"),
        (BASE + "hl7: {idle_timeout: 0}", ": hl7.idle_timeout: Input should be greater"),
        # a typo: named as unknown, with the key meant
        (BASE + "engine: {poll_intervall: 5}", ": engine.poll_intervall: unknown key (did you"),
        (BASE + "recevier: {port: 1}", ": recevier: unknown key (did you mean 'receiver'?)"),
        # YAML syntax: one line with the line number (was 2-7 lines)
        ("fhir: {base_url: 'http://x/fhir'\n  name: x: y\n", ":2: not valid YAML: expected ','"),
        ("fhir:\n  base_url: http://x\n\tname: y\n", ":3: not valid YAML: found character"),
    ],
)
def test_broken_configuration_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Each broken setting is one line: the file, the dotted key and the problem."""
    message = config_error(tmp_path, text)
    assert message.startswith(expected)
    if "max_event_age: Input" in expected:  # what to do, not only what is wrong
        assert message.endswith("write durations as ISO 8601, such as P14D or PT12H")


def test_dates_and_durations_in_range_load(tmp_path: Path) -> None:
    """Valid dates stay dates (YAML timestamps are read as text, pydantic parses them)."""
    path = tmp_path / "fhirbridge.yaml"
    path.write_text(BASE + "engine: {holidays: [2026-12-25], max_event_age: P30D}\n")
    config = load_config(path, environ={})
    assert config.engine.holidays is not None and str(config.engine.holidays[0]) == "2026-12-25"
    assert config.engine.max_event_age.days == 30


def rule_error(tmp_path: Path, text: str) -> str:
    """The message of the RuleError that loading ``text`` as a rule pack raises."""
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert "\n" not in str(info.value)
    return str(info.value)


def test_rule_key_typo_is_an_unknown_key_with_a_suggestion(tmp_path: Path) -> None:
    """``deu:`` for ``due:`` is reported as the unknown key, with the key meant, not as
    "missing required key 'due'"."""
    message = rule_error(tmp_path, GOOD.replace("due:", "deu:"))
    assert message.endswith("then[0].create-task: unknown key 'deu' (did you mean 'due'?)")
    assert ":10: rule 'discharge-home'" in message


def test_rule_pack_date_and_yaml_errors_name_the_line(tmp_path: Path) -> None:
    """A bad holiday names the key and the format; broken YAML is one line with its line."""
    pack = "version: 1\ndefaults: {holidays: [2026-13-45]}\nrules: []\n"
    assert "defaults.holidays[0]: '2026-13-45' is not a valid date" in rule_error(tmp_path, pack)
    assert "write it as YYYY-MM-DD" in rule_error(tmp_path, pack)
    broken = rule_error(tmp_path, "version: 1\nrules:\n  - id: x\n    when: [a\n")
    assert ":5: not valid YAML: expected ',' or ']'" in broken


def test_hl7_listen_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    """``hl7 --listen host:99999`` is refused with one line naming the option, before any
    socket is opened (it was an OverflowError from asyncio)."""
    from click.testing import CliRunner

    from fhirbridge.cli import main

    config = tmp_path / "fhirbridge.yaml"
    config.write_text(BASE)
    try:
        result = CliRunner().invoke(main, ["-c", str(config), "hl7", "--listen", "h:99999"])
    finally:
        structlog.reset_defaults()  # the CLI configures logging for the whole process
    assert result.exit_code == 2
    assert "--listen" in result.output and "0-65535" in result.output
