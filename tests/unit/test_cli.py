"""The command line's first hour: where options go, where the configuration is found, the
starter configuration, rule files, the journal guard, dead letters and start-up cost."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from click.testing import CliRunner

from fhirbridge.cli import main, sqlite_path
from fhirbridge.config import load_config
from fhirbridge.errors import ConfigError
from fhirbridge.rules.loader import SHIPPED_PACK
from fhirbridge.store import open_store


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """A runner in an empty folder, with no FHIRBRIDGE_* variables and no user config; the
    logging the commands configure is undone afterwards."""
    for key in [k for k in os.environ if k.startswith("FHIRBRIDGE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    yield CliRunner()
    structlog.reset_defaults()


def journal_with_letter(tmp_path: Path) -> Path:
    """A configuration whose SQLite journal holds one dead letter."""
    journal = tmp_path / "journal.db"
    store = open_store(f"sqlite:///{journal}")
    store.dead_letter("hl7v2", "MSG0001", "no Encounter with visit number V-9 on the server", b"x")
    store.close()
    config = tmp_path / "conf.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": "http://127.0.0.1:9/fhir"},
                "store": {"url": f"sqlite:///{journal}"},
            }
        )
    )
    return config


def test_global_options_go_before_or_after_the_command(runner: CliRunner, tmp_path: Path) -> None:
    """`--config` works in both positions (the first hour's most common stumble)."""
    config = journal_with_letter(tmp_path)
    before = runner.invoke(main, ["--config", str(config), "dead-letters"])
    after = runner.invoke(main, ["dead-letters", "--config", str(config)])
    assert before.exit_code == 0, before.output
    assert after.exit_code == 0, after.output
    assert "MSG0001" in before.output
    assert after.output == before.output


def test_the_configuration_is_found_in_the_working_folder(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Without --config, ./fhirbridge.yaml is used."""
    config = journal_with_letter(tmp_path)
    (tmp_path / "fhirbridge.yaml").write_text(config.read_text())
    result = runner.invoke(main, ["dead-letters", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["reference"] == "MSG0001"


def test_the_configuration_is_found_in_the_user_folder(runner: CliRunner, tmp_path: Path) -> None:
    """Without --config and ./fhirbridge.yaml, the user configuration folder is used."""
    config = journal_with_letter(tmp_path)
    folder = tmp_path / "xdg" / "fhirbridge"
    folder.mkdir(parents=True)
    (folder / "fhirbridge.yaml").write_text(config.read_text())
    assert runner.invoke(main, ["dead-letters"]).exit_code == 0


def test_no_configuration_is_one_line_naming_where_it_looked(runner: CliRunner) -> None:
    """Nothing found: exit 2 and a line that names every place and `fhirbridge init`."""
    result = runner.invoke(main, ["dead-letters"])
    assert result.exit_code == 2
    assert "--config" in result.output
    assert "FHIRBRIDGE_CONFIG" in result.output
    assert "fhirbridge init" in result.output


def test_init_writes_a_starter_that_loads(runner: CliRunner, tmp_path: Path) -> None:
    """`init` writes a configuration that validates, a private secret and the journal; it
    refuses to overwrite the configuration without --force."""
    result = runner.invoke(main, ["init", "--base-url", "https://ehr.example.org/fhir"])
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "fhirbridge.yaml")
    assert config.fhir.base_url == "https://ehr.example.org/fhir"
    secret = tmp_path / "fhirbridge.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert config.receiver.resolved_secret() == secret.read_text().strip()
    assert (tmp_path / "fhirbridge.db").exists()
    again = runner.invoke(main, ["init"])
    assert again.exit_code == 2
    assert "--force" in again.output
    assert runner.invoke(main, ["init", "--force"]).exit_code == 0
    assert load_config(tmp_path / "fhirbridge.yaml").receiver.resolved_secret() == (
        secret.read_text().strip()
    )


def test_a_missing_journal_is_not_created_by_accident(runner: CliRunner, tmp_path: Path) -> None:
    """A journal path that does not exist is refused (exit 4), naming the path."""
    config = tmp_path / "conf.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": "http://127.0.0.1:9/fhir"},
                "store": {"url": f"sqlite:///{tmp_path / 'typo.db'}"},
            }
        )
    )
    result = runner.invoke(main, ["dead-letters", "-c", str(config)])
    assert result.exit_code == 4
    assert "typo.db does not exist" in result.output
    assert not (tmp_path / "typo.db").exists()


def test_dead_letters_filter_by_source_and_time(runner: CliRunner, tmp_path: Path) -> None:
    """`dead-letters` shows the reason; `--source` and `--since` narrow the list."""
    config = journal_with_letter(tmp_path)
    shown = runner.invoke(main, ["dead-letters", "-c", str(config)])
    assert "no Encounter with visit number V-9" in shown.output
    other = runner.invoke(main, ["dead-letters", "-c", str(config), "--source", "process"])
    assert other.output.strip() == "no dead letters"
    later = runner.invoke(main, ["dead-letters", "-c", str(config), "--since", "2999-01-01"])
    assert later.output.strip() == "no dead letters"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative.db", Path("relative.db")),  # relative to the working folder
        ("sqlite:////var/lib/fhirbridge/journal.db", Path("/var/lib/fhirbridge/journal.db")),
        ("sqlite://:memory:", None),  # nothing on disk
        ("postgresql://fhirbridge@db/fhirbridge", None),  # not a file
        ("memory://", None),
    ],
)
def test_sqlite_path_of_a_journal_url(url: str, path: Path | None) -> None:
    """The journal guard looks at the right file for each URL form."""
    assert sqlite_path(url) == path


def test_user_rule_files_add_to_the_shipped_pack(tmp_path: Path) -> None:
    """`rules: [file]` keeps the shipped pack first; `replace_shipped: true` drops it."""
    mine = tmp_path / "mine.yaml"
    added = load_config(data={"fhir": {"base_url": "http://x/fhir"}, "rules": [str(mine)]})
    assert [p.name for p in added.rules] == [SHIPPED_PACK, "mine.yaml"]
    replaced = load_config(
        data={
            "fhir": {"base_url": "http://x/fhir"},
            "rules": {"files": [str(mine)], "replace_shipped": True},
        }
    )
    assert [p.name for p in replaced.rules] == ["mine.yaml"]


def test_rule_settings_errors_name_the_key(tmp_path: Path) -> None:
    """An unknown key under `rules`, or replacing the pack with nothing, is one clear line."""
    with pytest.raises(ConfigError, match=r"rules\.replace: unknown key"):
        load_config(data={"fhir": {"base_url": "http://x/fhir"}, "rules": {"replace": True}})
    with pytest.raises(ConfigError, match="needs at least one file"):
        load_config(
            data={"fhir": {"base_url": "http://x/fhir"}, "rules": {"replace_shipped": True}}
        )


def test_help_names_the_environment_variable_of_every_option(runner: CliRunner) -> None:
    """Every option of `run` shows its FHIRBRIDGE_* variable in --help."""
    result = runner.invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for variable in ("FHIRBRIDGE_CONFIG", "FHIRBRIDGE_RUN_ONCE", "FHIRBRIDGE_RUN_METRICS_PORT"):
        assert variable in result.output.replace("\n", " ").replace("  ", " ")


def test_the_command_line_imports_no_heavy_module_to_start() -> None:
    """Loading the CLI (what --help and --version need) imports neither the engine nor
    fhir.resources, the receiver or the database drivers."""
    probe = (
        "import sys, fhirbridge.cli; "
        "heavy = ['fhirbridge.engine', 'fhir.resources', 'fhirbridge.receiver', 'psycopg', "
        "'jwt', 'httpx', 'pydantic_settings']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def readme_block(language: str, containing: str) -> str:
    """The README's fenced block of ``language`` that contains ``containing``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for block in text.split(f"```{language}\n")[1:]:
        body = block.split("```", 1)[0]
        if containing in body:
            return body
    raise AssertionError(f"no {language} block with {containing!r} in README.md")


def test_the_readme_rule_example_loads_beside_the_shipped_pack(tmp_path: Path) -> None:
    """The README's rule file, saved as a user's file, loads with the shipped pack."""
    from fhirbridge.rules import load_rules

    mine = tmp_path / "mine.yaml"
    mine.write_text(readme_block("yaml", "my-discharge-contact"))
    config = load_config(data={"fhir": {"base_url": "http://x/fhir"}, "rules": [str(mine)]})
    pack = load_rules(config.rules)
    ids = [rule.id for rule in pack.rules]
    assert "my-discharge-contact" in ids
    assert len(ids) > 1  # the shipped rules are still there


def test_the_readme_python_example_is_a_complete_program() -> None:
    """The README's Python snippet compiles as a module (no top-level await) and uses only
    public names."""
    import fhirbridge

    source = readme_block("python", "Bridge.from_config")
    compile(source, "README.md", "exec")
    for name in ("Bridge", "load_config"):
        assert name in fhirbridge.__all__


def test_json_output_keeps_nested_figures_and_drops_reference_lists() -> None:
    """`--json` of an HL7 v2 ingest carries the write figures, not the list of what was
    written (references belong in the server, not in a report)."""
    from fhirbridge.cli import as_data
    from fhirbridge.sources.hl7v2 import V2Stats
    from fhirbridge.writeback.writer import WriteStats

    data = as_data(V2Stats(messages=2, written=WriteStats(created=3, written=["Task/1"])))
    assert data["messages"] == 2
    assert data["written"]["created"] == 3
    assert "Task/1" not in json.dumps(data)
