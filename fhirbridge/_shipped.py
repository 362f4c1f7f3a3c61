"""Where the data shipped with fhirbridge lives: ``mappings/`` (rule packs and code tables)
and ``profiles/`` (what the engine writes must conform to).

An installed wheel carries each folder inside the package as ``fhirbridge/_data/<name>``,
found with :mod:`importlib.resources`; a source checkout (editable install) keeps it at the
repository root, next to ``pyproject.toml``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fhirbridge.errors import ConfigError

__all__ = ["mappings_dir", "shipped_dir"]


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` (``"mappings"``, ``"profiles"``).

    Raises :class:`~fhirbridge.errors.ConfigError` when neither the installed nor the
    checkout folder exists.
    """
    package = files("fhirbridge")
    installed = package / "_data" / name
    if isinstance(installed, Path) and installed.is_dir():
        return installed.resolve()
    root = Path(str(package)).resolve().parent
    checkout = root / name
    if checkout.is_dir() and (root / "pyproject.toml").is_file():
        return checkout
    raise ConfigError(
        f"the shipped {name}/ folder is missing (looked in {installed} and {checkout})"
    )


def mappings_dir() -> Path:
    """The folder holding the shipped rule packs and code tables (see :func:`shipped_dir`)."""
    return shipped_dir("mappings")
