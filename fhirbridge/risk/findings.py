"""What a score says about its own inputs, for people: Observation notes and plan details.

A score whose C is 0 because the problem list is coded in a system the tables do not know
must say so. :func:`score_notes` turns a :class:`ScoreResult` into ``Observation.note``
Annotations (the weight table used, the Conditions recognised only by their text, the codes
no table recognised); :func:`score_details` is the JSON-ready summary ``plan --json`` shows.
"""

from __future__ import annotations

from typing import Any

from fhirbridge.risk._result import ScoreResult

__all__ = ["score_details", "score_notes"]

#: Where a user adds a code that was not recognised.
EXTEND_HINT = "mappings/charlson-snomed.yaml (concepts, or local for other code systems)"


def _coding_text(system: str | None, code: str | None, display: str | None) -> str:
    label = f"{system}|{code}" if system and code else (code or "(text only)")
    return f'{label} "{display}"' if display else label


def score_notes(result: ScoreResult) -> list[dict[str, str]]:
    """``Observation.note`` Annotations for ``result`` (empty when there is nothing to say)."""
    notes: list[dict[str, str]] = []
    if result.charlson_weights:
        weights = ", ".join(f"{k} {w}" for k, w in result.charlson_weights.items())
        notes.append({"text": f"Charlson weights used ({result.score_name} table): {weights}"})
    if result.charlson_by_text:
        notes.append(
            {
                "text": "Charlson categories found from the display text only (no listed code): "
                + ", ".join(result.charlson_by_text)
            }
        )
    if result.unrecognised:
        items = "; ".join(
            _coding_text(u.system, u.code, u.display) + (f" ({u.condition})" if u.condition else "")
            for u in result.unrecognised
        )
        notes.append(
            {
                "text": f"Condition codes not recognised by the Charlson tables (counted as no "
                f"comorbidity; add them to {EXTEND_HINT}): {items}"
            }
        )
    return notes


def score_details(result: ScoreResult) -> dict[str, Any]:
    """The parts of ``result`` a user checks before trusting the total (for ``plan --json``)."""
    return {
        "components": dict(result.components),
        "missing": list(result.missing),
        "charlson_categories": list(result.charlson_categories),
        "charlson_by_text": list(result.charlson_by_text),
        "unrecognised": [u.as_dict() for u in result.unrecognised],
    }
