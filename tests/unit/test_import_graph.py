"""The package's import graph points down the stage order, and has no cycle between stages.

Every module of ``fhirbridge/`` is parsed with :mod:`ast` (nothing is imported). An import is
*module-level* (runs when the module loads), *deferred* (inside a function: runs when the
function does) or *typing* (under ``if TYPE_CHECKING:``: never runs, but still a dependency a
reader and the type checker follow). A stage is a top-level module or subpackage of
``fhirbridge``; imports inside one stage are its own business.

Every import of every kind must point to a stage strictly lower in :data:`ORDER`, except the
few listed in :data:`EXCEPTIONS`, each with the reason it points up; an exception that no
longer exists fails too, so the list cannot go stale. The root package is the public face
and sits at the top, but Python loads it before any submodule, so importing a name from it
(``from fhirbridge import __version__``) is no dependency on what it re-exports: what the root
itself loads at import time must be the bottom stages only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fhirbridge"

#: The stages, lowest first; a stage may import only stages on earlier lines. Stages on one
#: line are peers and must not import each other.
ORDER: list[tuple[str, ...]] = [
    ("errors", "clock", "values", "logs", "metrics"),  # plain values, errors, time, logging
    ("identity", "_shipped", "_yaml", "_fhirjson"),  # identifiers, shipped data, YAML, FHIR JSON
    ("rules",),  # the rule pack, calendar and code tables (pure)
    ("config",),  # the settings of every stage (needs the pack's defaults)
    ("fhir",),  # the FHIR REST client (built from its config section)
    ("store",),  # the journal
    ("detect",),  # transitions (pure; reads the pack's code tables)
    ("risk",),  # LACE and HOSPITAL (pure, with FHIR-JSON helpers)
    ("riskplan", "report"),  # the patient's risk for the rules; the coordination report
    ("writeback",),  # actions -> FHIR writes through the outbox
    ("casemgmt",),  # case-management timers and completion, planned as writes
    ("sources",),  # poll, bulk export, HL7 v2
    ("pipeline",),  # one pipeline: detect, plan, write, per patient lane
    ("preflight",),  # checks of a configuration against its server and store
    ("engine",),  # Bridge: the stages wired from one configuration
    ("service", "supervisor"),  # the service loop of ``fhirbridge run``; its worker processes
    ("subscriptions",),  # Subscriptions on the server for the receiver
    ("console",),  # the operator console (mounted by the receiver)
    ("receiver",),  # the notification receiver (``fhirbridge serve``)
    ("testing", "starter"),  # shipped test helpers; a starter configuration
    ("demo",),  # the demo on an embedded sekmet server
    ("cli",),  # the command line
    ("__main__", ""),  # ``python -m fhirbridge``; the root package (the public face)
]

#: (importing module, imported stage) -> why this import may point up the order.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("fhirbridge.engine", "service"): (
        "Bridge.run_forever is a convenience that runs the service loop of `fhirbridge run`; "
        "deferred, so the engine does not load the service's metrics unless asked"
    ),
}

LEVEL = {stage: level for level, stages in enumerate(ORDER) for stage in stages}


@dataclass(frozen=True)
class Import:
    """One import of one fhirbridge stage by a module of another."""

    module: str  # the importing module, dotted
    line: int
    target: str  # the imported stage ("" for the root package)
    kind: str  # "module", "deferred" or "typing"

    def __str__(self) -> str:
        target = f"fhirbridge.{self.target}" if self.target else "fhirbridge"
        return f"{self.module}:{self.line} -> {target} ({self.kind})"


def module_name(path: Path) -> str:
    """``fhirbridge/a/b.py`` -> ``fhirbridge.a.b``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    """The stage a dotted module belongs to (``""`` for the root package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.kinds = ["module"]
        self.found: list[tuple[str, int, str]] = []

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.kinds.append("typing")
        for child in node.body:
            self.visit(child)
        self.kinds.pop()
        for child in node.orelse:
            self.visit(child)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer = self.kinds[-1]
        self.kinds.append("deferred" if outer == "module" else outer)
        self.generic_visit(node)
        self.kinds.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        submodules = [
            f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in self.modules
        ]
        if submodules and len(submodules) == len(node.names):
            # ``from fhirbridge import identity``: the submodule is what is imported
            for name in submodules:
                self._add(name, node.lineno)
        else:
            self._add(source, node.lineno)

    def _add(self, target: str, line: int) -> None:
        if target == "fhirbridge" or target.startswith("fhirbridge."):
            self.found.append((target, line, self.kinds[-1]))


def package_imports() -> list[Import]:
    """Every import of one stage by another, in every module of the package."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    out: list[Import] = []
    for path in paths:
        module = module_name(path)
        collector = _Collector(module, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for target, line, kind in collector.found:
            if stage_of(target) not in (stage_of(module), ""):
                out.append(Import(module, line, stage_of(target), kind))
    return out


IMPORTS = package_imports()


def test_the_root_package_loads_only_the_bottom_stages() -> None:
    """``import fhirbridge`` (which every submodule import runs first) loads only stages of
    the lowest level; the heavy public names are imported on first use."""
    loaded = {i.target for i in IMPORTS if i.module == "fhirbridge" and i.kind == "module"}
    assert loaded and loaded <= set(ORDER[0])


def test_every_stage_has_a_place_in_the_order() -> None:
    """A new module or subpackage of fhirbridge must be placed in ORDER before it can land."""
    stages = {stage_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert stages - set(LEVEL) == set()
    assert set(LEVEL) - stages == set(), "ORDER names a stage that no longer exists"


@pytest.mark.parametrize("kind", ["module", "deferred", "typing"])
def test_imports_point_down_the_stage_order(kind: str) -> None:
    """No import of this kind points to a stage at or above the importer's, unless it is a
    documented exception."""
    upward = [
        str(i)
        for i in IMPORTS
        if i.kind == kind
        and LEVEL[i.target] >= LEVEL[stage_of(i.module)]
        and (i.module, i.target) not in EXCEPTIONS
    ]
    assert upward == []


def test_exceptions_are_still_needed() -> None:
    """Each documented exception still names an import that points up (else drop it)."""
    upward = {(i.module, i.target) for i in IMPORTS if LEVEL[i.target] >= LEVEL[stage_of(i.module)]}
    assert set(EXCEPTIONS) - upward == set()
    assert all(i.kind != "module" for i in IMPORTS if (i.module, i.target) in EXCEPTIONS), (
        "an upward import that runs at load time is a cycle waiting to happen: no exception"
    )


def test_no_cycle_between_stages() -> None:
    """The stage graph without the documented exceptions has no cycle (a depth-first search
    finds no back edge)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        if (i.module, i.target) not in EXCEPTIONS:
            graph[stage_of(i.module)].add(i.target)
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(stage: str, path: list[str]) -> None:
        state[stage] = "open"
        for nxt in sorted(graph[stage]):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[stage] = "done"

    for stage in sorted(graph):
        if stage not in state:
            visit(stage, [stage])
    assert cycles == []


def test_the_collector_sees_each_kind_of_import() -> None:
    """The parser tells module-level, deferred and TYPE_CHECKING imports apart, resolves
    relative imports, and treats ``from fhirbridge import x`` as importing the submodule."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from fhirbridge import identity\n"
        "from . import values\n"
        "if TYPE_CHECKING:\n"
        "    from fhirbridge.engine import Bridge\n"
        "def f():\n"
        "    import fhirbridge.cli\n"
    )
    collector = _Collector(
        "fhirbridge.rules.x", False, {"fhirbridge.identity", "fhirbridge.rules.values"}
    )
    collector.visit(ast.parse(source))
    assert collector.found == [
        ("fhirbridge.identity", 2, "module"),
        ("fhirbridge.rules.values", 3, "module"),
        ("fhirbridge.engine", 5, "typing"),
        ("fhirbridge.cli", 7, "deferred"),
    ]
