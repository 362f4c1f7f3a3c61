"""The public face of fhirbridge.rules."""

from __future__ import annotations

from pathlib import Path

import fhirbridge.rules as rules
from fhirbridge.rules import mappings_dir


def test_all_is_sorted_and_complete() -> None:
    """`__all__` is sorted, and names exactly the public names the package exports."""
    assert rules.__all__ == sorted(rules.__all__)
    modules = {n for n, v in vars(rules).items() if isinstance(v, type(rules))}
    public = {n for n in vars(rules) if not n.startswith("_")} - modules - {"annotations"}
    assert set(rules.__all__) == public
    assert set(rules.__all__) == {
        "BusinessCalendar",
        "DispositionTable",
        "PlanContext",
        "RulePack",
        "disposition_group",
        "load_rules",
        "mappings_dir",
    }


def test_mappings_dir_finds_the_shipped_files() -> None:
    """In a checkout, mappings_dir() is the repository's mappings/ with the shipped files."""
    found = mappings_dir()
    assert isinstance(found, Path)
    assert (found / "transitional-care.yaml").is_file()
    assert (found / "dispositions.yaml").is_file()
