"""Finding the shipped data folders (mappings/, profiles/) installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbridge import _shipped
from fhirbridge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_reads_the_repository_folders() -> None:
    """In a source checkout both folders are the repository's own."""
    assert _shipped.mappings_dir() == REPO / "mappings"
    assert _shipped.shipped_dir("profiles") == REPO / "profiles"


def test_an_installed_package_reads_its_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel's ``fhirbridge/_data/<name>`` wins over a folder beside the package."""
    package = tmp_path / "site" / "fhirbridge"
    (package / "_data" / "mappings").mkdir(parents=True)
    (tmp_path / "site" / "mappings").mkdir()
    monkeypatch.setattr(_shipped, "files", lambda name: package)
    assert _shipped.mappings_dir() == (package / "_data" / "mappings").resolve()


def test_a_folder_beside_the_package_counts_only_in_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``pyproject.toml`` next to it, a stray ``mappings/`` is not the shipped one,
    and the error names both places looked in."""
    package = tmp_path / "fhirbridge"
    package.mkdir()
    (tmp_path / "mappings").mkdir()
    monkeypatch.setattr(_shipped, "files", lambda name: package)
    with pytest.raises(ConfigError, match=r"mappings/ folder is missing .*_data.* and "):
        _shipped.mappings_dir()
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    assert _shipped.mappings_dir() == tmp_path.resolve() / "mappings"
