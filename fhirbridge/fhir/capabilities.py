"""What a FHIR server offers the engine: its CapabilityStatement, read by :func:`assess`,
and where that declaration is missing, ambiguous or says no, safe probes
(:mod:`fhirbridge.fhir.probe`) whose findings make a :class:`~fhirbridge.fhir.probe.ServerProfile`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Capability", "assess", "declared_resources", "offers_topic_subscriptions"]

BACKPORT_TOPIC_EXT = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)
BACKPORT_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
)


@dataclass(frozen=True, slots=True)
class Capability:
    """One row of ``fhirbridge check``: what the engine needs and whether the server has it."""

    name: str
    required: bool
    ok: bool
    detail: str = ""
    #: where the answer came from: "declared" (CapabilityStatement), "probed" (tried on the
    #: server) or "checked" (a preflight step such as an authenticated search)
    source: str = "declared"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``fhirbridge check --json``)."""
        return {
            "name": self.name,
            "required": self.required,
            "ok": self.ok,
            "source": self.source,
            "detail": self.detail,
        }


def declared_resources(statement: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The ``rest.resource`` entries of a CapabilityStatement's server modes, by type."""
    found: dict[str, Mapping[str, Any]] = {}
    for rest in statement.get("rest") or ():
        if rest.get("mode", "server") != "server":
            continue
        for resource in rest.get("resource") or ():
            found[str(resource.get("type"))] = resource
    return found


def _interactions(entries: Any) -> set[str]:
    return {str(i.get("code")) for i in entries or () if isinstance(i, Mapping)}


def _topics(subscription: Mapping[str, Any] | None) -> list[str]:
    return [
        str(ext.get("valueCanonical"))
        for ext in (subscription or {}).get("extension") or ()
        if ext.get("url") == BACKPORT_TOPIC_EXT
    ]


def offers_topic_subscriptions(statement: Mapping[str, Any]) -> bool:
    """Whether the server declares topic-based (Subscriptions Backport) subscriptions: topic
    canonicals on its Subscription resource, or the backport-subscription profile."""
    subscription = declared_resources(statement).get("Subscription")
    if subscription is None:
        return False
    profiles = subscription.get("supportedProfile") or ()
    return bool(_topics(subscription)) or BACKPORT_PROFILE in profiles


def assess(
    statement: Mapping[str, Any],
    *,
    watched: Sequence[str],
    smart_configuration: Mapping[str, Any] | None = None,
    smart_required: bool = False,
) -> list[Capability]:
    """The engine's needs checked against a CapabilityStatement (and smart-configuration)."""
    rows: list[Capability] = []
    version = str(statement.get("fhirVersion") or "unknown")
    rows.append(Capability("FHIR version R4 (4.0.x)", True, version.startswith("4.0"), version))
    resources = declared_resources(statement)
    rests = [r for r in statement.get("rest") or () if r.get("mode", "server") == "server"]
    system_interactions = set().union(*(_interactions(r.get("interaction")) for r in rests))
    for rtype in watched:
        entry = resources.get(rtype)
        if entry is None:
            rows.append(Capability(f"{rtype}: search by _lastUpdated", True, False, "not listed"))
            continue
        params = {str(p.get("name")) for p in entry.get("searchParam") or ()}
        ops = _interactions(entry.get("interaction"))
        # _lastUpdated is a common parameter many servers do not list per type
        ok = "search-type" in ops
        detail = "listed" if "_lastUpdated" in params else "search-type (common parameter)"
        rows.append(Capability(f"{rtype}: search by _lastUpdated", True, ok, detail))
    task = resources.get("Task", {})
    careplan = resources.get("CarePlan", {})
    conditional = bool(task.get("conditionalCreate"))
    rows.append(Capability("conditional create (Task)", True, conditional, ""))
    versioned = {task.get("versioning"), careplan.get("versioning")} <= {"versioned-update"}
    detail = f"Task {task.get('versioning')}, CarePlan {careplan.get('versioning')}"
    rows.append(Capability("versioned update (If-Match)", True, versioned, detail))
    rows.append(
        Capability(
            "transactions",
            False,
            "transaction" in system_interactions,
            "batch too" if "batch" in system_interactions else "",
        )
    )
    subscription = resources.get("Subscription")
    rows.append(
        Capability(
            "R4 rest-hook subscriptions",
            False,
            subscription is not None and "create" in _interactions(subscription.get("interaction")),
            "",
        )
    )
    topics = _topics(subscription)
    backport = offers_topic_subscriptions(statement)
    rows.append(
        Capability("topic-based subscriptions (Backport)", False, backport, f"{len(topics)} topics")
    )
    operations = set()
    for rest in rests:
        operations |= {str(o.get("name")) for o in rest.get("operation") or ()}
    for entry in resources.values():
        operations |= {str(o.get("name")) for o in entry.get("operation") or ()}
    rows.append(Capability("bulk export ($export)", False, "export" in operations, ""))
    services = {
        str(coding.get("code"))
        for rest in rests
        for service in (rest.get("security") or {}).get("service") or ()
        for coding in service.get("coding") or ()
    }
    smart_conf = smart_configuration or {}
    smart = "token_endpoint" in smart_conf
    detail = f"token endpoint {smart_conf['token_endpoint']}" if smart else ""
    if not smart and "SMART-on-FHIR" in services:
        detail = "advertised in security.service, no smart-configuration"
    rows.append(Capability("SMART Backend Services", smart_required, smart, detail))
    return rows
