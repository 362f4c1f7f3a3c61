"""Bounds on a notification body, checked before anything is journalled.

A body is read only as far as :class:`JsonLimits` allow: valid UTF-8, JSON, nested at most
``depth`` levels, at most ``elements`` values in all, no string longer than ``string``
characters (FHIR: a string SHALL NOT exceed 1 MB), and no text the journal cannot store or
re-encode: an escaped lone surrogate (``"\\ud800"``) is valid JSON but no valid Unicode, and
``"\\u0000"`` cannot be kept in a PostgreSQL text column. Everything refused raises
:class:`~fhirbridge.receiver._notify.NotificationError` (400), so the sender hears why and
nothing reaches the journal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fhirbridge.receiver._notify import NotificationError

__all__ = ["JsonLimits", "check_json", "load_json"]

_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """How deep, how many values and how long a string a notification body may hold."""

    depth: int = 64
    elements: int = 200_000
    string: int = 1 << 20


def _check_text(value: str, limits: JsonLimits, escaped: bool, what: str) -> None:
    if len(value) > limits.string:
        raise NotificationError(f"{what}: a string is longer than {limits.string} characters")
    if escaped and (bad := _UNSTORABLE.search(value)) is not None:
        kind = "a NUL character" if bad.group() == "\x00" else "a lone surrogate (not Unicode)"
        raise NotificationError(f"{what}: a string holds {kind} (U+{ord(bad.group()):04X})")


def check_json(
    data: Any, limits: JsonLimits | None = None, *, what: str = "the JSON", escaped: bool = True
) -> None:
    """Refuse parsed JSON beyond ``limits`` or holding unstorable text (``escaped`` False
    skips the character check: the text had no ``\\u`` escape to smuggle them in)."""
    limits = limits or JsonLimits()
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > limits.elements:
            raise NotificationError(f"{what} holds more than {limits.elements} values")
        if isinstance(value, str):
            _check_text(value, limits, escaped, what)
        elif isinstance(value, dict | list):
            if depth > limits.depth:
                raise NotificationError(f"{what} is nested deeper than {limits.depth} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key, limits, escaped, what)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def load_json(body: bytes, limits: JsonLimits | None = None) -> Any:
    """The JSON in ``body`` if it keeps within ``limits``, else :class:`NotificationError`."""
    limits = limits or JsonLimits()
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotificationError(
            f"the body is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise NotificationError(f"the JSON is nested deeper than {limits.depth} levels") from None
    except ValueError as exc:
        raise NotificationError(f"the body is not JSON: {exc}") from None
    # strict UTF-8 and JSON already exclude both unless a \u escape brings them in
    check_json(data, limits, escaped="\\u" in text)
    return data
