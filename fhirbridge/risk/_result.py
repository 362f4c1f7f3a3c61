"""The value every risk score returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhirbridge._fhirjson import resource_key

if TYPE_CHECKING:
    from fhirbridge.risk.comorbidity import Unrecognised

__all__ = ["Evidence", "ScoreResult", "tier_for"]


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One score for one index encounter, with what it was computed from.

    ``components`` maps each item of the score to its points, in the score's own order
    (LACE: L, A, C, E; HOSPITAL: H, O, S, P, IT, A, L). ``found`` and ``missing`` name the
    inputs that were and were not present: a missing input counts as absent (0 points) and is
    reported here so that a reader can tell "no risk" from "no data". ``inputs`` lists the
    ``Type/id`` references of the resources the points came from (for ``derivedFrom`` and
    ``basis``), the index Encounter first.

    ``unrecognised`` lists the Condition codings no code table recognised (system, code,
    display), so that a reader can tell why C is low and extend ``mappings/``;
    ``charlson_weights`` is the weight of every Charlson category in the table the score used
    (LACE's own weights), and ``charlson_by_text`` the Conditions recognised only by the
    fallback terms of ``mappings/charlson-snomed.yaml``.
    """

    score_name: str
    total: int
    tier: str
    components: Mapping[str, int] = field(hash=False)
    found: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    charlson_categories: tuple[str, ...] = ()
    acuity_signals: tuple[str, ...] = ()
    length_of_stay: int | None = None
    unrecognised: tuple[Unrecognised, ...] = ()
    charlson_weights: Mapping[str, int] = field(default_factory=dict, hash=False)
    charlson_by_text: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "score": self.score_name,
            "total": self.total,
            "tier": self.tier,
            "components": dict(self.components),
            "found": list(self.found),
            "missing": list(self.missing),
            "inputs": list(self.inputs),
            "charlson_categories": list(self.charlson_categories),
            "acuity_signals": list(self.acuity_signals),
            "length_of_stay": self.length_of_stay,
            "unrecognised": [u.as_dict() for u in self.unrecognised],
            "charlson_weights": dict(self.charlson_weights),
            "charlson_by_text": list(self.charlson_by_text),
        }


def tier_for(total: int, bands: tuple[tuple[int, str], ...]) -> str:
    """The name of the last band whose lower bound ``total`` reaches (bands in ascending order)."""
    name = bands[0][1]
    for low, band in bands:
        if total >= low:
            name = band
    return name


class Evidence:
    """What one score is computing from: the inputs found and missing, in the score's order,
    and the ``Type/id`` of every resource its points came from (the index encounter first)."""

    __slots__ = ("found", "missing", "refs")

    def __init__(self, index: str | None) -> None:
        self.found: list[str] = []
        self.missing: list[str] = []
        self.refs: list[str] = [index] if index else []

    def note(self, label: str, present: bool) -> None:
        """Name the input ``label`` as found or as missing."""
        (self.found if present else self.missing).append(label)

    def cite(self, resources: Iterable[Mapping[str, Any]]) -> None:
        """Add the resources (those with a type and an id) that points came from."""
        self.refs.extend(key for resource in resources if (key := resource_key(resource)))

    def result(
        self,
        score_name: str,
        components: Mapping[str, int],
        bands: tuple[tuple[int, str], ...],
        **details: Any,
    ) -> ScoreResult:
        """The :class:`ScoreResult`: the points of ``components`` summed and banded, with the
        inputs noted so far (each reference once) and the score's own ``details``."""
        total = sum(components.values())
        return ScoreResult(
            score_name=score_name,
            total=total,
            tier=tier_for(total, bands),
            components=components,
            found=tuple(self.found),
            missing=tuple(self.missing),
            inputs=tuple(dict.fromkeys(self.refs)),
            **details,
        )
