"""The FHIR R4 invariants (FHIRPath constraints) that bite what the engine writes, checked
before a resource leaves, so that a strict server's rejection is found here.

Strict validators (HAPI's, Medplum's) count a constraint as met only when its expression
gives ``true``: an empty result fails. That is why a RiskAssessment ``prediction`` without
any ``probability[x]`` is refused by such a server under ras-2
(``probability is decimal implies (probability as decimal) <= 100`` is empty there); this
module applies the same rule. Expressions are the R4 specification's, evaluated with
``fhirpathpy`` on its R4 model (choice types resolve: ``probability`` is
``probabilityDecimal``).

=========  ==================================  ========================================
key        context                             rule
=========  ==================================  ========================================
ele-1      every element                       has a value or children (no ``{}``,
                                               ``[]`` or ``""`` in the JSON)
dom-2..5   DomainResource                      contained resources: none nested, no
                                               versionId/lastUpdated/security
ras-1      RiskAssessment.prediction           probabilityRange low/high are UCUM ``%``
           .probability[x]
ras-2      RiskAssessment.prediction           probability is a decimal <= 100
inv-1      Task                                lastModified >= authoredOn
per-1      every Period the engine writes      start <= end
cpl-3      CarePlan.activity                   a reference or a detail, not both
obs-3      Observation.referenceRange          low, high or text
obs-6      Observation                         dataAbsentReason only without a value
obs-7      Observation                         no component with the Observation's code
=========  ==================================  ========================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhirbridge.errors import ProfileError

__all__ = ["INVARIANTS", "Invariant", "check_invariants", "violations"]

UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class Invariant:
    """One R4 constraint: its key, the resource type, the context path and the expression."""

    key: str
    resource_type: str
    context: str
    expression: str
    human: str


_DOMAIN = (
    ("dom-2", "contained.contained.empty()", "no nested contained resources"),
    (
        "dom-4",
        "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
        "contained resources carry no versionId or lastUpdated",
    ),
    ("dom-5", "contained.meta.security.empty()", "contained resources carry no security labels"),
)
#: per-1 with exists() for hasValue() (fhirpathpy has no hasValue; same for JSON primitives
#: without extensions)
_PER_1 = "start.exists().not() or end.exists().not() or (start <= end)"

INVARIANTS: tuple[Invariant, ...] = (
    *(
        Invariant(key, rtype, rtype, expression, human)
        for rtype in ("Task", "CarePlan", "RiskAssessment", "Observation", "Provenance")
        for key, expression, human in _DOMAIN
    ),
    Invariant(
        "ras-1",
        "RiskAssessment",
        "RiskAssessment.prediction.probability.ofType(Range)",
        "(low.empty() or ((low.code = '%') and (low.system = %ucum))) and "
        "(high.empty() or ((high.code = '%') and (high.system = %ucum)))",
        "low and high must be percentages, if present",
    ),
    Invariant(
        "ras-2",
        "RiskAssessment",
        "RiskAssessment.prediction",
        "probability is decimal implies (probability as decimal) <= 100",
        "must be <= 100 (and strict validators need a probability to say so)",
    ),
    Invariant(
        "inv-1",
        "Task",
        "Task",
        "lastModified.exists().not() or authoredOn.exists().not() or lastModified >= authoredOn",
        "last modified date must be greater than or equal to authored-on date",
    ),
    Invariant("per-1", "Task", "Task.executionPeriod", _PER_1, "start <= end"),
    Invariant("per-1", "Task", "Task.restriction.period", _PER_1, "start <= end"),
    Invariant("per-1", "CarePlan", "CarePlan.period", _PER_1, "start <= end"),
    Invariant(
        "cpl-3",
        "CarePlan",
        "CarePlan.activity",
        "detail.empty() or reference.empty()",
        "provide a reference or detail, not both",
    ),
    Invariant(
        "obs-3",
        "Observation",
        "Observation.referenceRange",
        "low.exists() or high.exists() or text.exists()",
        "must have at least a low or a high or text",
    ),
    Invariant(
        "obs-6",
        "Observation",
        "Observation",
        "dataAbsentReason.empty() or value.empty()",
        "dataAbsentReason SHALL only be present if Observation.value[x] is not present",
    ),
    Invariant(
        "obs-7",
        "Observation",
        "Observation",
        "value.empty() or component.code.where(coding.intersect(%resource.code.coding)"
        ".exists()).empty()",
        "no component code may equal the Observation's code when it has a value",
    ),
)

Compiled = Callable[..., list[Any]]


@cache
def _compiled(expression: str) -> Compiled:
    compiled: Compiled = fhirpath_compile(expression, models["r4"])
    return compiled


def _empty_elements(value: Any, path: str) -> list[str]:
    """ele-1 on JSON: every object, array and string has content."""
    if isinstance(value, Mapping):
        if not value:
            return [path]
        found: list[str] = []
        for key, item in value.items():
            found += _empty_elements(item, f"{path}.{key}")
        return found
    if isinstance(value, list):
        if not value:
            return [path]
        found = []
        for index, item in enumerate(value):
            found += _empty_elements(item, f"{path}[{index}]")
        return found
    if isinstance(value, str) and not value.strip():
        return [path]
    return []


def violations(resource: Mapping[str, Any]) -> list[str]:
    """Every invariant ``resource`` breaks, as ``"key at path: rule"`` lines (none: [])."""
    rtype = str(resource.get("resourceType") or "")
    found = [
        f"ele-1 at {p}: an element must have a value or children"
        for p in _empty_elements(resource, rtype)
    ]
    env = {"resource": resource, "rootResource": resource, "ucum": UCUM}
    for invariant in INVARIANTS:
        if invariant.resource_type != rtype:
            continue
        count = _compiled(f"{invariant.context}.count()")(resource, env)
        for index in range(int(count[0]) if count else 0):
            where = f"{invariant.context}[{index}]"
            result = _compiled(f"{where}.select({invariant.expression})")(resource, env)
            if result != [True]:
                found.append(f"{invariant.key} at {where}: {invariant.human}")
    return found


def check_invariants(resources: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
    """Raise :class:`ProfileError` naming every broken invariant of ``resources``."""
    items = [resources] if isinstance(resources, Mapping) else list(resources)
    broken = [f"{r.get('resourceType')}: {line}" for r in items for line in violations(r)]
    if broken:
        raise ProfileError("R4 invariants broken, not sent: " + "; ".join(broken))
