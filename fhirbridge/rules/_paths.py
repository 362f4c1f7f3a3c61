"""Where the shipped ``mappings/`` live: in the package when installed, else in the checkout."""

from __future__ import annotations

from pathlib import Path

from fhirbridge.errors import ConfigError

__all__ = ["mappings_dir"]

_PACKAGE = Path(__file__).resolve().parents[1]


def mappings_dir() -> Path:
    """The folder holding the shipped rule packs and code tables.

    An installed wheel carries them as ``fhirbridge/_data/mappings``; a source checkout
    (editable install) keeps them at the repository root, next to ``pyproject.toml``.
    Raises :class:`~fhirbridge.errors.ConfigError` when neither exists.
    """
    installed = _PACKAGE / "_data" / "mappings"
    if installed.is_dir():
        return installed
    root = _PACKAGE.parent
    checkout = root / "mappings"
    if checkout.is_dir() and (root / "pyproject.toml").is_file():
        return checkout
    raise ConfigError(
        f"the shipped mappings/ folder is missing (looked in {installed} and {checkout})"
    )
