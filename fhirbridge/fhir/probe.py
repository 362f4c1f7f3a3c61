"""What a server really does, found by trying it: the :class:`ServerProfile`.

A CapabilityStatement is a declaration, and declarations differ from behaviour: one widely
deployed server declares ``versioning: "versioned"`` yet enforces ``If-Match`` (200 on the
current version, 412 on a stale one); no statement can say whether a transaction honours
conditional entries or how exactly ``_lastUpdated`` compares instants. So each need the engine
has is decided from the declaration where it says yes, and otherwise from a safe probe:

==========================  ==================================================================
need                        probe
==========================  ==================================================================
If-Match enforcement        update the scratch resource with its current version (must pass),
                            then with the stale one (must be refused with 412 or 409)
conditional create          ``POST`` with ``If-None-Exist`` on the scratch identifier: 200 and
                            the same id means honoured, 201 means ignored
transaction, conditional    a transaction of one conditional create of the scratch identifier:
                            entry ``200`` honoured, ``201`` ignored, an error: not available
``_lastUpdated`` precision  ``gt`` the scratch's instant truncated to the second (matches when
                            the server compares exact instants) and ``ge`` it to the
                            millisecond (400 when the server takes seconds only)
identifier search per type  ``GET [type]?identifier=...&_count=1`` with
                            ``Prefer: handling=strict`` (400 when the parameter is unknown)
==========================  ==================================================================

The scratch resource is a ``Basic`` the engine owns: tagged with the engine tag and a probe
tag, carrying a fresh identifier, and deleted afterwards with anything a probe made by
accident. The probes are also the preflight's test write (created, read, deleted).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from fhirbridge.errors import FhirError, ResourceNotFound, ServerError, VersionConflict
from fhirbridge.fhir.capabilities import Capability, declared_resources
from fhirbridge.fhir.client import FhirClient
from fhirbridge.values import ENGINE_SYSTEM, ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, parse_instant

__all__ = [
    "PROBE_IDENTIFIER_SYSTEM",
    "PROBE_TAG",
    "Finding",
    "ServerProfile",
    "discover",
    "server_profile",
]

log = structlog.get_logger(__name__)
Source = Literal["declared", "probed"]
PROBE_IDENTIFIER_SYSTEM = f"{ENGINE_SYSTEM}/probe"
#: The tag every scratch resource carries (beside the engine tag).
PROBE_TAG = {"system": f"{ENGINE_SYSTEM}/tag", "code": "probe"}
#: The types the engine creates once by identifier (Tasks, CarePlans, risk resources).
IDENTIFIER_TYPES = ("Task", "CarePlan", "Observation", "RiskAssessment")


@dataclass(frozen=True, slots=True)
class Finding:
    """One need, decided: whether the server has it, from where, and what was seen."""

    supported: bool
    source: Source
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"supported": self.supported, "source": self.source, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What the engine may rely on at one server, decided once and logged once.

    The writer reads :attr:`write_path` (a transaction Bundle per write unit where the
    server honours conditional entries in transactions, else one request per resource),
    :meth:`searchable_by_identifier` (conditional create on the identifier, else a
    read-then-PUT of the deterministic id), :attr:`versioned_update` (If-Match on CarePlan
    updates); the poller reads :attr:`last_updated_precision`.
    """

    base_url: str
    versioned_update: Finding
    conditional_create: Finding
    transaction: Finding
    last_updated: Finding
    #: "millisecond" when ``_lastUpdated`` takes and compares fractional seconds, else "second"
    last_updated_precision: Literal["millisecond", "second"]
    identifier_search: Mapping[str, Finding] = field(default_factory=dict)
    test_write: Finding | None = None

    @property
    def write_path(self) -> Literal["transaction", "per-resource"]:
        """How a write unit goes out: one transaction, or one request per resource."""
        return "transaction" if self.transaction.supported else "per-resource"

    def searchable_by_identifier(self, resource_type: str) -> bool:
        """Whether ``resource_type`` can be searched (and conditionally created) by identifier."""
        found = self.identifier_search.get(resource_type)
        return found is not None and found.supported

    def rows(self) -> list[Capability]:
        """The findings as ``fhirbridge check`` rows (required ones first)."""
        rows = [
            _row("versioned update (If-Match)", True, self.versioned_update),
            _row("conditional create (If-None-Exist)", True, self.conditional_create),
            _row("transactions with conditional entries", False, self.transaction),
            _row(
                f"_lastUpdated precision ({self.last_updated_precision})",
                True,
                self.last_updated,
            ),
        ]
        for rtype, found in sorted(self.identifier_search.items()):
            rows.append(_row(f"{rtype}: search by identifier", False, found))
        if self.test_write is not None:
            rows.append(_row("test write (create, read, delete)", True, self.test_write))
        return rows

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``check --json``, the ``server_profile`` log event)."""
        return {
            "base_url": self.base_url,
            "write_path": self.write_path,
            "versioned_update": self.versioned_update.as_dict(),
            "conditional_create": self.conditional_create.as_dict(),
            "transaction": self.transaction.as_dict(),
            "last_updated": self.last_updated.as_dict(),
            "last_updated_precision": self.last_updated_precision,
            "identifier_search": {k: v.as_dict() for k, v in self.identifier_search.items()},
            "test_write": self.test_write.as_dict() if self.test_write else None,
        }


def _row(name: str, required: bool, found: Finding) -> Capability:
    return Capability(name, required, found.supported, found.detail, found.source)


# -- the declaration ------------------------------------------------------------------------
def _system_interactions(statement: Mapping[str, Any]) -> set[str]:
    return {
        str(i.get("code"))
        for rest in statement.get("rest") or ()
        if rest.get("mode", "server") == "server"
        for i in rest.get("interaction") or ()
    }


def _declared_identifier(resources: Mapping[str, Mapping[str, Any]], rtype: str) -> bool:
    entry = resources.get(rtype) or {}
    return any(p.get("name") == "identifier" for p in entry.get("searchParam") or ())


# -- the probes -----------------------------------------------------------------------------
class _Scratch:
    """The scratch Basic and everything a probe created, deleted at the end."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.value = f"probe-{uuid.uuid4().hex}"
        self.identifier = f"{PROBE_IDENTIFIER_SYSTEM}|{self.value}"
        self.made: list[str] = []
        self.resource: dict[str, Any] = {}

    def body(self, text: str) -> dict[str, Any]:
        return {
            "resourceType": "Basic",
            "meta": {"tag": [{"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}, PROBE_TAG]},
            "identifier": [{"system": PROBE_IDENTIFIER_SYSTEM, "value": self.value}],
            "code": {"text": text},
        }

    async def create(self) -> Finding:
        try:
            made = await self.client.create(self.body("fhirbridge capability probe"))
        except FhirError as exc:
            return Finding(False, "probed", f"cannot create a scratch Basic: {exc}")
        if not made.id:
            return Finding(False, "probed", "the create returned no id")
        self.made.append(made.id)
        try:
            self.resource = await self.client.read("Basic", made.id)
        except FhirError as exc:
            return Finding(False, "probed", f"created Basic/{made.id} but cannot read it: {exc}")
        return Finding(True, "probed", "")

    async def delete_all(self) -> str:
        failures = []
        for rid in dict.fromkeys(self.made):
            try:
                await self.client.delete("Basic", rid)
            except ResourceNotFound:
                continue
            except FhirError as exc:
                failures.append(f"Basic/{rid}: {exc}")
        return "; ".join(failures)

    @property
    def id(self) -> str:
        return str(self.resource.get("id") or "")

    @property
    def version(self) -> str | None:
        version = (self.resource.get("meta") or {}).get("versionId")
        return str(version) if version else None


async def _probe_if_match(scratch: _Scratch) -> Finding:
    stale = scratch.version
    if stale is None:
        return Finding(False, "probed", "the server gives no meta.versionId")
    body = {**scratch.body("fhirbridge capability probe (updated)"), "id": scratch.id}
    try:
        updated = await scratch.client.update(body, if_match=stale)
    except FhirError as exc:
        return Finding(False, "probed", f"an update with the current version failed: {exc}")
    if updated.version_id == stale:
        return Finding(False, "probed", "a changed update made no new version")
    again = {**scratch.body("fhirbridge capability probe (stale)"), "id": scratch.id}
    try:
        await scratch.client.update(again, if_match=stale)
    except VersionConflict as exc:
        return Finding(True, "probed", f"current version accepted, stale refused ({exc.status})")
    except FhirError as exc:
        return Finding(False, "probed", f"a stale If-Match gave {exc}")
    return Finding(False, "probed", "a stale If-Match was accepted: updates are not versioned")


async def _probe_conditional_create(scratch: _Scratch) -> Finding:
    try:
        result = await scratch.client.create(
            scratch.body("fhirbridge capability probe (duplicate)"),
            if_none_exist=f"identifier={scratch.identifier}",
        )
    except FhirError as exc:
        return Finding(False, "probed", f"If-None-Exist was refused: {exc}")
    if result.id and result.id != scratch.id:
        scratch.made.append(result.id)
        return Finding(False, "probed", "If-None-Exist was ignored: a second resource was made")
    return Finding(True, "probed", f"the existing resource came back ({result.status})")


async def _probe_transaction(scratch: _Scratch, declared: bool) -> Finding:
    said = "declared" if declared else "not declared"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": scratch.body("fhirbridge capability probe (transaction)"),
                "request": {
                    "method": "POST",
                    "url": "Basic",
                    "ifNoneExist": f"identifier={scratch.identifier}",
                },
            }
        ],
    }
    try:
        answer = await scratch.client.transaction(bundle)
    except FhirError as exc:
        return Finding(False, "probed", f"transactions {said}; a transaction failed: {exc}")
    entries = answer.get("entry") or []
    response = (entries[0].get("response") or {}) if entries else {}
    status = str(response.get("status") or "")
    location = str(response.get("location") or "")
    if status.startswith("201"):
        parts = location.split("/")
        if "Basic" in parts and parts.index("Basic") + 1 < len(parts):
            scratch.made.append(parts[parts.index("Basic") + 1])
        return Finding(False, "probed", f"transactions {said}; a conditional entry was ignored")
    if status.startswith("200"):
        return Finding(True, "probed", f"transactions {said}; conditional entries honoured")
    return Finding(False, "probed", f"transactions {said}; the entry answered {status!r}")


def _instant_text(moment: datetime, millis: bool) -> str:
    moment = moment.astimezone(UTC)
    if millis:
        text = moment.isoformat(timespec="milliseconds")
    else:
        text = moment.replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z")


async def _matches(scratch: _Scratch, value: str) -> bool:
    found = await scratch.client.search_all(
        "Basic", {"_id": scratch.id, "_lastUpdated": value, "_count": 1}
    )
    return any(r.get("id") == scratch.id for r in found)


async def _probe_last_updated(
    scratch: _Scratch,
) -> tuple[Finding, Literal["millisecond", "second"]]:
    try:
        scratch.resource = await scratch.client.read("Basic", scratch.id)
    except FhirError as exc:
        return Finding(False, "probed", f"cannot read the scratch Basic again: {exc}"), "second"
    stamped = (scratch.resource.get("meta") or {}).get("lastUpdated")
    moment = parse_instant(stamped)
    if moment is None:
        return Finding(False, "probed", "the server gives no meta.lastUpdated"), "second"
    try:
        exact_ok = await _matches(scratch, "ge" + _instant_text(moment, True))
    except ServerError as exc:
        detail = f"fractional seconds refused ({exc.status}): seconds watermarks"
        return Finding(True, "probed", detail), "second"
    if not exact_ok:
        return Finding(False, "probed", f"ge its own lastUpdated {stamped} did not match"), "second"
    fraction = moment.microsecond != 0
    detail = "exact instants" if fraction else "the server stamps whole seconds"
    if fraction:
        try:
            exact = await _matches(scratch, "gt" + _instant_text(moment, False))
        except ServerError:
            exact = False
        detail = (
            "compares exact instants (gt the second matches)"
            if exact
            else "compares at the precision given"
        )
    return Finding(True, "probed", detail), "millisecond"


async def _probe_identifier(client: FhirClient, rtype: str) -> Finding:
    params = {"identifier": f"{PROBE_IDENTIFIER_SYSTEM}|absent-{uuid.uuid4().hex}", "_count": 1}
    try:
        response = await client.request(
            "GET", rtype, params=params, headers={"Prefer": "handling=strict"}
        )
    except ServerError as exc:
        return Finding(False, "probed", f"refused ({exc.status})")
    except FhirError as exc:
        return Finding(False, "probed", str(exc))
    try:
        bundle = response.json()
    except ValueError:
        return Finding(False, "probed", "the answer is not JSON")
    matched = [
        e
        for e in bundle.get("entry") or ()
        if (e.get("search") or {}).get("mode", "match") == "match"
    ]
    if matched:
        return Finding(False, "probed", "the parameter was ignored (unrelated matches)")
    return Finding(True, "probed", "an absent identifier matched nothing")


async def discover(
    client: FhirClient,
    *,
    identifier_types: Sequence[str] = IDENTIFIER_TYPES,
    probe: bool = True,
) -> ServerProfile:
    """Decide every need from the CapabilityStatement and, where it does not say yes, from a
    probe (``probe=False`` trusts the declaration alone and writes nothing)."""
    statement = await client.capabilities()
    resources = declared_resources(statement)
    task, careplan = resources.get("Task") or {}, resources.get("CarePlan") or {}
    versionings = {task.get("versioning"), careplan.get("versioning")}
    declared_versioned = versionings == {"versioned-update"}
    declared_conditional = bool(task.get("conditionalCreate"))
    declared_transaction = "transaction" in _system_interactions(statement)
    vdetail = f"Task {task.get('versioning')}, CarePlan {careplan.get('versioning')}"

    versioned = Finding(declared_versioned, "declared", vdetail)
    conditional = Finding(declared_conditional, "declared", "")
    transaction = Finding(declared_transaction, "declared", "")
    last_updated = Finding(True, "declared", "not probed: seconds watermarks")
    precision: Literal["millisecond", "second"] = "second"
    identifiers = {
        t: Finding(True, "declared", "listed")
        for t in identifier_types
        if _declared_identifier(resources, t)
    }
    test_write: Finding | None = None
    if not probe:
        for t in identifier_types:
            identifiers.setdefault(t, Finding(False, "declared", "not listed"))
    else:
        for t in identifier_types:
            if t not in identifiers:
                identifiers[t] = await _probe_identifier(client, t)
        scratch = _Scratch(client)
        test_write = await scratch.create()
        try:
            if test_write.supported:
                if not declared_versioned:
                    found = await _probe_if_match(scratch)
                    versioned = Finding(
                        found.supported, "probed", f"declared {vdetail}; {found.detail}"
                    )
                if not declared_conditional:
                    conditional = await _probe_conditional_create(scratch)
                transaction = await _probe_transaction(scratch, declared_transaction)
                last_updated, precision = await _probe_last_updated(scratch)
            else:
                failed = Finding(False, "probed", "no scratch resource to probe with")
                versioned = versioned if declared_versioned else failed
                conditional = conditional if declared_conditional else failed
                transaction = transaction if declared_transaction else failed
        finally:
            left = await scratch.delete_all()
        if left and test_write.supported:
            test_write = Finding(False, "probed", f"could not delete {left}")
        elif test_write.supported:
            test_write = Finding(True, "probed", f"Basic created, read and deleted ({scratch.id})")
    return ServerProfile(
        base_url=client.base_url,
        versioned_update=versioned,
        conditional_create=conditional,
        transaction=transaction,
        last_updated=last_updated,
        last_updated_precision=precision,
        identifier_search=identifiers,
        test_write=test_write,
    )


_PROFILES: weakref.WeakKeyDictionary[FhirClient, ServerProfile] = weakref.WeakKeyDictionary()


async def server_profile(client: FhirClient, *, probe: bool = True) -> ServerProfile:
    """The :class:`ServerProfile` of ``client``'s server, discovered once per client and
    logged once (event ``server_profile``); later calls return the same value."""
    known = _PROFILES.get(client)
    if known is not None:
        return known
    profile = await discover(client, probe=probe)
    _PROFILES[client] = profile
    log.info(
        "server_profile",
        write_path=profile.write_path,
        versioned_update=profile.versioned_update.supported,
        versioned_update_source=profile.versioned_update.source,
        conditional_create=profile.conditional_create.supported,
        transaction=profile.transaction.supported,
        last_updated_precision=profile.last_updated_precision,
        identifier_search=sorted(t for t, f in profile.identifier_search.items() if f.supported),
    )
    return profile
