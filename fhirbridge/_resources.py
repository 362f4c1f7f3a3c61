"""Where the shipped data folders (``mappings/``, ``profiles/``) live."""

from __future__ import annotations

from pathlib import Path

from fhirbridge.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped folder ``name``: ``fhirbridge/_data/<name>`` when installed from a wheel,
    ``<repo>/<name>`` in a source checkout (editable install)."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise ConfigError(f"the shipped {name}/ folder is missing (looked in {installed}, {checkout})")
