"""Promises the project makes about itself: its public API, its README and its CI."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import fhirbridge

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_complete() -> None:
    """`__all__` is sorted, every name in it exists, and every public re-export is in it."""
    names = fhirbridge.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert hasattr(fhirbridge, name), name
    public = {
        n
        for n, v in vars(fhirbridge).items()
        if not n.startswith("_") and not isinstance(v, type(fhirbridge)) and n != "annotations"
    }
    assert public <= set(names)


def _stage_packages() -> list[str]:
    """Every subpackage of fhirbridge, found on disk (a new one is covered without a list)."""
    package = ROOT / "fhirbridge"
    return sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in package.rglob("__init__.py")
        if init.parent != package
    )


def test_every_stage_package_is_covered() -> None:
    """The package list is read from disk, and finds the stages users import from."""
    packages = _stage_packages()
    assert {"fhirbridge.fhir", "fhirbridge.receiver", "fhirbridge.testing"} <= set(packages)


@pytest.mark.parametrize("module", _stage_packages())
def test_subpackage_all_is_sorted_and_resolves(module: str) -> None:
    """Each stage package declares a sorted `__all__` whose names all exist."""
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert names == sorted(names)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"


def _imported_modules(tree: ast.AST) -> list[str]:
    """Every module an AST imports, ``from a import b`` counted as ``a`` and ``a.b``."""
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return out


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/_builders, a folder's ``_`` modules and conftest
    fixtures: no file under tests/ imports a test module or a conftest."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module in _imported_modules(tree):
            last = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                found.append(f"{path.relative_to(ROOT)}: {module}")
    assert found == []


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_two_commands() -> None:
    """The README's first block is the demo command and the test command, both self-contained."""
    demo, tests = _readme_commands()
    assert demo.startswith("python3 -m venv .venv && ") and demo.endswith("fhirbridge demo")
    assert tests.startswith("python3 -m venv .venv && ") and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """`.ci/run` runs exactly the README's set-up and test command."""
    _, tests = _readme_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_errors_share_one_root() -> None:
    """Every exception class fhirbridge exports derives from FhirBridgeError."""
    for name in fhirbridge.__all__:
        value = getattr(fhirbridge, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, fhirbridge.FhirBridgeError), name


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_configurations_load(example: Path) -> None:
    """Every configuration shipped in examples/ is valid."""
    from fhirbridge.config import load_config

    config = load_config(example, environ={})
    assert config.fhir.base_url.startswith("http")
