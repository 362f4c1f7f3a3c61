"""The configuration and rule-pack loaders under broken input: a one-line ConfigError (or
RuleError) naming the file, never another exception and never a multi-line message."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbridge.config import load_config
from fhirbridge.errors import ConfigError, RuleError
from fhirbridge.rules import load_rules
from tests._builders.rules import GOOD
from tests.fuzz._strategies import json_values, mutated
from tests.fuzz._tally import TALLY, examples

CONFIG: dict[str, Any] = {
    "fhir": {
        "base_url": "https://ehr.example.org/fhir",
        "auth": {"type": "bearer", "token": "t"},
        "retry": {"attempts": 3},
    },
    "store": {"url": "sqlite:///j.db"},
    "engine": {
        "max_event_age": "P14D",
        "holidays": ["2026-12-25"],
        "timezone": "America/New_York",
        "weekend": ["sat", "sun"],
    },
    "receiver": {"port": 8089, "public_url": "https://bridge.example.org", "max_body": 65536},
    "hl7": {"max_frame": 65536, "idle_timeout": 60},
    "subscriptions": [{"topic": "http://example.org/t", "heartbeat": 60}],
}
YAMLISH = "abc:-[]{}#&*!|>'\"%@`,?\n  \t0123456789.P"
FOLDER = Path(tempfile.mkdtemp(prefix="fhirbridge-fuzz-config-"))


def _one_line(message: str, prefix: str) -> None:
    assert "\n" not in message, message
    assert prefix in message, message


@settings(max_examples=examples(400))
@given(data=mutated(CONFIG))
def test_broken_configuration_data_is_one_config_error_line(data: Any) -> None:
    """Any configuration with garbage in one to three places loads or is one ConfigError
    line naming the source; nothing else escapes."""
    TALLY["config: documents"] += 1
    path = FOLDER / "fhirbridge.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    try:
        load_config(path, environ={})
    except ConfigError as exc:
        _one_line(str(exc), str(path))


@settings(max_examples=examples(300))
@given(text=st.text(alphabet=YAMLISH, max_size=120))
def test_yaml_garbage_is_one_config_error_line(text: str) -> None:
    """Text that is barely YAML is one ConfigError line, with its line when it has one."""
    TALLY["config: documents"] += 1
    path = FOLDER / "garbage.yaml"
    path.write_text("fhir: {base_url: 'https://ehr/fhir'}\n" + text)
    try:
        load_config(path, environ={})
    except ConfigError as exc:
        _one_line(str(exc), str(path))


@settings(max_examples=examples(300))
@given(pack=mutated(yaml.safe_load(GOOD)) | json_values)
def test_broken_rule_packs_are_one_rule_error_line(pack: Any) -> None:
    """A rule pack with garbage in it loads or is one RuleError line naming the file."""
    TALLY["config: rule packs"] += 1
    path = FOLDER / "pack.yaml"
    path.write_text(yaml.safe_dump(pack))
    try:
        load_rules([path])
    except RuleError as exc:
        _one_line(str(exc), "pack.yaml")
