"""How the harness runs sekmet's CLI: which executable, with which environment."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

_ENV_OVERRIDES = (
    "SEKMET_CONFIG",
    "SEKMET_BASE_URL",
    "SEKMET_DB",
    "SEKMET_PORT",
    "SEKMET_PUBLIC_URL",
)


def sekmet_command() -> list[str]:
    """The argv prefix that runs the ``sekmet`` CLI of this interpreter's environment.

    The ``sekmet`` script next to :data:`sys.executable` (a virtualenv's ``bin/``) comes first,
    then ``sekmet`` on ``PATH``, then ``python -m sekmet.cli``.
    """
    beside = Path(sys.executable).with_name("sekmet")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    on_path = shutil.which("sekmet")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "sekmet.cli"]


def clean_env() -> dict[str, str]:
    """This process's environment minus the variables that override sekmet's settings file."""
    return {k: v for k, v in os.environ.items() if k not in _ENV_OVERRIDES}
