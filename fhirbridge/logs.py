"""Logging set-up for the command line: structlog events, with PHI kept out.

Library code only calls ``structlog.get_logger(__name__)``; nothing is configured on import.
:func:`configure` is what the CLI (or an embedding service) calls once.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["DROPPED_KEYS", "HASHED_KEYS", "configure", "redact_phi"]

#: Event keys whose values may carry PHI and are never logged.
DROPPED_KEYS = frozenset(
    {"body", "resource_body", "params", "query", "name", "birthDate", "address", "telecom", "mrn"}
)
#: Event keys whose values identify a patient: logged as a short one-way hash.
HASHED_KEYS = frozenset({"patient", "subject", "identifier"})


def _digest(value: Any) -> str:
    return "h:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]


def redact_phi(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: drop PHI-bearing keys and hash patient identifiers."""
    for key in DROPPED_KEYS & event_dict.keys():
        event_dict[key] = "[redacted]"
    for key in HASHED_KEYS & event_dict.keys():
        if event_dict[key] is not None:
            event_dict[key] = _digest(event_dict[key])
    return event_dict


def configure(*, verbose: bool = False, json_output: bool = False, level: str = "warning") -> None:
    """Log events to stderr at ``level`` and up (``verbose``: debug), PHI redacted; one JSON
    object per line with ``json_output``, else rendered for a console."""
    threshold = logging.DEBUG if verbose else logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_phi,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
