"""The SQL of the stores: numbered migrations and named queries, read from ``sql/<dialect>/``.

Each dialect's folder holds::

    0001_initial.sql    migrations, applied in order and recorded in ``schema_version``
    0002_...sql
    queries.sql         named queries: a ``-- name: <name>`` line, then the statement

Nothing is ever formatted into the SQL: every value is a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Literal

__all__ = ["Dialect", "Migration", "migrations", "queries"]

Dialect = Literal["sqlite", "postgres"]

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change."""

    version: int
    name: str
    sql: str


@cache
def migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """The dialect's migrations, in order; their numbers run 1, 2, 3, ... without a gap."""
    folder = files("fhirbridge.store").joinpath("sql", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {numbers}")
    return tuple(found)


@cache
def queries(dialect: Dialect) -> dict[str, str]:
    """The dialect's named queries: name -> statement (comments and the final ``;`` removed)."""
    text = files("fhirbridge.store").joinpath("sql", dialect, "queries.sql").read_text("utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            if match[1] in found:
                raise RuntimeError(f"{dialect} query {match[1]!r} is defined twice")
            current = found[match[1]] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";").strip() for name, lines in found.items()}
