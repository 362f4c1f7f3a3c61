"""An in-memory FHIR R4 server on :class:`httpx.MockTransport`, for tests without a network.

Point a :class:`~fhirbridge.fhir.FhirClient` (or a :class:`~fhirbridge.Bridge`) at it::

    fake = FakeFhirServer()
    fake.put({"resourceType": "Patient", "id": "p1"})
    async with fake.client() as client:
        patient = await client.read("Patient", "p1")

It keeps every version and implements what the engine relies on, strictly: read, vread,
search (``_id``, ``_lastUpdated`` with ``gt/ge/lt/le/eq``, ``_tag``, ``identifier``,
``patient``/``subject``, ``status``, other top-level token or string fields, ``_count``,
``_sort=_lastUpdated``, paging by ``_offset``), create with ``If-None-Exist``, update with
``If-Match`` (412 on a stale version), delete, and ``transaction`` / ``batch`` Bundles with
conditional entries and ``urn:uuid`` references (a transaction is all or nothing). A search
parameter or modifier it does not know is a 400 with an OperationOutcome, so a test never
passes on a filter that was silently ignored. ``requests`` records every request; use
:meth:`count` to assert request budgets.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

__all__ = ["FakeFhirServer"]

FHIR_JSON = "application/fhir+json"
_PREFIXES = ("gt", "ge", "lt", "le", "eq")
_CONTROL = {"_count", "_sort", "_offset", "_total", "_format", "_summary"}


class _Outcome(Exception):
    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text

    def response(self) -> httpx.Response:
        return _json(
            self.status,
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": self.code, "diagnostics": self.text}],
            },
        )


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": FHIR_JSON, **(headers or {})},
    )


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class FakeFhirServer:
    """An in-memory FHIR R4 server (see the module docstring)."""

    def __init__(
        self,
        base_url: str = "http://fhir.test/fhir",
        *,
        now: Callable[[], datetime] | None = None,
        transactions: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transactions = transactions
        self._now = now or (lambda: datetime.now(UTC))
        self._last_stamp: datetime | None = None
        self._ids = itertools.count(1)
        self.history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.deleted: set[tuple[str, str]] = set()
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    # -- seeding and inspection ------------------------------------------------------
    def put(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Store a resource as a new version (an id is assigned if it has none)."""
        return self._store(dict(resource))

    def current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The current version, or None (never written, or deleted)."""
        key = (resource_type, resource_id)
        if key in self.deleted or key not in self.history:
            return None
        return copy.deepcopy(self.history[key][-1])

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """Current versions of one type, in id order."""
        return [
            copy.deepcopy(versions[-1])
            for (kind, rid), versions in sorted(self.history.items())
            if kind == resource_type and (kind, rid) not in self.deleted
        ]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests recorded, optionally of one method and whose path starts with ``path``
        (relative to the base, e.g. ``"Task"``)."""
        prefix = f"{httpx.URL(self.base_url).path}/{path}" if path else ""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and r.url.path.startswith(prefix)
        )

    def client(self, **kwargs: Any) -> Any:
        """A :class:`~fhirbridge.fhir.FhirClient` on this server."""
        from fhirbridge.fhir import FhirClient

        return FhirClient(self.base_url, transport=self.transport, **kwargs)

    # -- storage ---------------------------------------------------------------------
    def _stamp(self) -> datetime:
        now = self._now()
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(milliseconds=1)
        self._last_stamp = now
        return now

    def _store(self, resource: dict[str, Any]) -> dict[str, Any]:
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or not kind:
            raise _Outcome(400, "invalid", "the body is not a FHIR resource (no resourceType)")
        rid = resource.get("id") or str(next(self._ids))
        key = (kind, str(rid))
        versions = self.history.setdefault(key, [])
        self.deleted.discard(key)
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(len(versions) + 1)
        meta["lastUpdated"] = self._stamp().isoformat().replace("+00:00", "Z")
        stored = {**copy.deepcopy(resource), "id": str(rid), "meta": meta}
        versions.append(stored)
        return copy.deepcopy(stored)

    # -- HTTP ------------------------------------------------------------------------
    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        base = httpx.URL(self.base_url).path.rstrip("/")
        path = request.url.path
        if not path.startswith(base):
            return _Outcome(404, "not-found", f"no such path {path}").response()
        parts = [p for p in path[len(base) :].split("/") if p]
        params = parse_qsl(request.url.query.decode(), keep_blank_values=True)
        try:
            return self._route(request, parts, params)
        except _Outcome as outcome:
            return outcome.response()

    def _route(
        self, request: httpx.Request, parts: list[str], params: list[tuple[str, str]]
    ) -> httpx.Response:
        method = request.method
        if parts == ["metadata"] and method == "GET":
            return _json(200, self.capability_statement())
        if not parts and method == "POST":
            return _json(200, self._bundle(_body(request)))
        if len(parts) == 1 and method == "GET":
            return _json(200, self._search(parts[0], params))
        if len(parts) == 1 and method == "POST":
            status, resource, location = self._create(
                parts[0], _body(request), request.headers.get("If-None-Exist")
            )
            return _json(status, resource, {"Location": location})
        if len(parts) == 2 and method == "GET":
            return _json(200, self._read(parts[0], parts[1]))
        if len(parts) == 2 and method == "PUT":
            status, resource, location = self._update(
                parts[0], parts[1], _body(request), request.headers.get("If-Match")
            )
            return _json(status, resource, {"Location": location, "ETag": _etag(resource)})
        if len(parts) == 2 and method == "DELETE":
            self.deleted.add((parts[0], parts[1]))
            return httpx.Response(204)
        if len(parts) == 4 and parts[2] == "_history" and method == "GET":
            return _json(200, self._vread(parts[0], parts[1], parts[3]))
        raise _Outcome(405, "not-supported", f"{method} {'/'.join(parts)} is not supported")

    def capability_statement(self) -> dict[str, Any]:
        """What this server offers, as a CapabilityStatement."""
        interactions = ["read", "vread", "search-type", "create", "update", "delete"]
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": kind,
                            "versioning": "versioned-update",
                            "conditionalCreate": True,
                            "interaction": [{"code": code} for code in interactions],
                            "searchParam": [{"name": "_lastUpdated", "type": "date"}],
                        }
                        for kind in (
                            "Patient",
                            "Encounter",
                            "ServiceRequest",
                            "Task",
                            "CarePlan",
                            "CareTeam",
                            "Condition",
                            "Observation",
                            "Procedure",
                            "RiskAssessment",
                            "Provenance",
                            "Subscription",
                            "Coverage",
                        )
                    ],
                    "interaction": (
                        [{"code": "transaction"}, {"code": "batch"}] if self.transactions else []
                    ),
                }
            ],
        }

    # -- interactions ----------------------------------------------------------------
    def _read(self, kind: str, rid: str) -> dict[str, Any]:
        key = (kind, rid)
        if key in self.deleted:
            raise _Outcome(410, "deleted", f"{kind}/{rid} was deleted")
        found = self.current(kind, rid)
        if found is None:
            raise _Outcome(404, "not-found", f"{kind}/{rid} does not exist")
        return found

    def _vread(self, kind: str, rid: str, vid: str) -> dict[str, Any]:
        for version in self.history.get((kind, rid), []):
            if version["meta"]["versionId"] == vid:
                return copy.deepcopy(version)
        raise _Outcome(404, "not-found", f"{kind}/{rid}/_history/{vid} does not exist")

    def _create(
        self,
        kind: str,
        resource: dict[str, Any],
        if_none_exist: str | None,
        new_id: str | None = None,
    ) -> tuple[int, dict[str, Any], str]:
        if resource.get("resourceType") != kind:
            raise _Outcome(400, "invalid", f"the body is not a {kind}")
        if if_none_exist:
            matches = self._matches(kind, parse_qsl(if_none_exist, keep_blank_values=True))
            if len(matches) > 1:
                raise _Outcome(412, "duplicate", f"{len(matches)} resources match {if_none_exist}")
            if matches:
                found = matches[0]
                return 200, found, self._location(found)
        resource = {k: v for k, v in resource.items() if k != "id"}
        if new_id is not None:
            resource["id"] = new_id
        stored = self._store({**resource, "resourceType": kind})
        return 201, stored, self._location(stored)

    def _update(
        self, kind: str, rid: str, resource: dict[str, Any], if_match: str | None
    ) -> tuple[int, dict[str, Any], str]:
        if resource.get("resourceType") != kind or resource.get("id") != rid:
            raise _Outcome(400, "invalid", f"the body is not {kind}/{rid}")
        current = self.current(kind, rid)
        if if_match is not None:
            wanted = if_match.removeprefix("W/").strip('"')
            have = current["meta"]["versionId"] if current is not None else None
            if have != wanted:
                raise _Outcome(412, "conflict", f"{kind}/{rid} is at version {have}, not {wanted}")
        stored = self._store(resource)
        return (200 if current is not None else 201), stored, self._location(stored)

    def _location(self, resource: Mapping[str, Any]) -> str:
        return (
            f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
            f"/_history/{resource['meta']['versionId']}"
        )

    # -- search ----------------------------------------------------------------------
    def _search(self, kind: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        matches = self._matches(kind, params)
        control = dict(p for p in params if p[0] in _CONTROL)
        if control.get("_sort") in ("_lastUpdated", "-_lastUpdated"):
            matches.sort(
                key=lambda r: _instant(r["meta"]["lastUpdated"]),
                reverse=control["_sort"].startswith("-"),
            )
        count = int(control.get("_count", "50") or 50)
        offset = int(control.get("_offset", "0") or 0)
        page = matches[offset : offset + count]
        links = [{"relation": "self", "url": self._search_url(kind, params, offset)}]
        if offset + count < len(matches):
            links.append(
                {"relation": "next", "url": self._search_url(kind, params, offset + count)}
            )
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{self.base_url}/{kind}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in page
            ],
        }

    def _search_url(self, kind: str, params: list[tuple[str, str]], offset: int) -> str:
        kept = [(k, v) for k, v in params if k != "_offset"]
        return f"{self.base_url}/{kind}?{urlencode([*kept, ('_offset', str(offset))])}"

    def _matches(self, kind: str, params: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        found = self.resources(kind)
        for name, value in params:
            if name in _CONTROL:
                continue
            test = _criterion(name, value)
            found = [r for r in found if test(r)]
        return found

    # -- bundles ---------------------------------------------------------------------
    def _bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        kind = bundle.get("type")
        if bundle.get("resourceType") != "Bundle" or kind not in ("transaction", "batch"):
            raise _Outcome(400, "invalid", "POST to the base takes a transaction or batch Bundle")
        if not self.transactions:
            raise _Outcome(405, "not-supported", "this server does not take transaction or batch")
        entries = bundle.get("entry") or []
        if kind == "batch":
            return {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [self._batch_entry(e) for e in entries],
            }
        saved = (copy.deepcopy(self.history), set(self.deleted))
        try:
            return {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": self._transaction(entries),
            }
        except _Outcome:
            self.history, self.deleted = saved
            raise

    def _batch_entry(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._entry(entry, {})
        except _Outcome as outcome:
            body = json.loads(outcome.response().content)
            return {"response": {"status": str(outcome.status), "outcome": body}}

    def _transaction(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # what each urn:uuid entry will be, first (an existing match of a conditional
        # create, or a new id), so references between entries can be rewritten
        names: dict[str, str] = {}
        for entry in entries:
            request = entry.get("request") or {}
            full = str(entry.get("fullUrl") or "")
            kind = str((entry.get("resource") or {}).get("resourceType") or "")
            if not full.startswith("urn:uuid:") or request.get("method") != "POST":
                continue
            condition = request.get("ifNoneExist")
            if condition:
                matches = self._matches(kind, parse_qsl(condition, keep_blank_values=True))
                if len(matches) > 1:
                    raise _Outcome(412, "duplicate", f"{len(matches)} resources match {condition}")
                if matches:
                    names[full] = f"{kind}/{matches[0]['id']}"
                    continue
            names[full] = f"{kind}/{next(self._ids)}"
        return [self._entry(e, names) for e in entries]

    def _entry(self, entry: Mapping[str, Any], names: dict[str, str]) -> dict[str, Any]:
        request = entry.get("request") or {}
        method = str(request.get("method") or "")
        url = str(request.get("url") or "")
        resource = _rewrite(copy.deepcopy(entry.get("resource") or {}), names)
        path, _, query = url.partition("?")
        parts = [p for p in path.split("/") if p]
        if method == "GET":
            if len(parts) == 1:
                body = self._search(parts[0], parse_qsl(query, keep_blank_values=True))
            else:
                body = self._read(parts[0], parts[1])
            return {"resource": body, "response": {"status": "200"}}
        if method == "POST" and len(parts) == 1:
            full = str(entry.get("fullUrl") or "")
            assigned = names[full].partition("/")[2] if full in names else None
            status, stored, location = self._create(
                parts[0], resource, request.get("ifNoneExist"), new_id=assigned
            )
            return {
                "resource": stored,
                "response": {
                    "status": f"{status} {'Created' if status == 201 else 'OK'}",
                    "location": location,
                },
            }
        if method == "PUT" and len(parts) == 2:
            status, stored, location = self._update(
                parts[0], parts[1], resource, request.get("ifMatch")
            )
            return {
                "resource": stored,
                "response": {"status": str(status), "location": location, "etag": _etag(stored)},
            }
        if method == "DELETE" and len(parts) == 2:
            self.deleted.add((parts[0], parts[1]))
            return {"response": {"status": "204"}}
        raise _Outcome(400, "not-supported", f"entry {method} {url} is not supported")


def _body(request: httpx.Request) -> dict[str, Any]:
    try:
        body = json.loads(request.content or b"{}")
    except ValueError as exc:
        raise _Outcome(400, "invalid", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _Outcome(400, "invalid", "the body is not a FHIR resource")
    return body


def _etag(resource: Mapping[str, Any]) -> str:
    return f'W/"{resource["meta"]["versionId"]}"'


def _rewrite(value: Any, names: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (names.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, names))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(v, names) for v in value]
    return value


def _criterion(name: str, value: str) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for one search parameter (400 for what this server does not know)."""
    if ":" in name:
        raise _Outcome(400, "not-supported", f"search modifier in {name!r} is not supported")
    alternatives = value.split(",")
    if name == "_id":
        return lambda r: r.get("id") in alternatives
    if name == "_lastUpdated":
        return _date_test(value, lambda r: r.get("meta", {}).get("lastUpdated"))
    if name == "_tag":
        return lambda r: any(
            _token_matches(t, alt) for t in r.get("meta", {}).get("tag", []) for alt in alternatives
        )
    if name in ("patient", "subject"):
        fields = ("subject", "for", "patient", "beneficiary") if name == "patient" else ("subject",)
        return lambda r: any(
            _reference_matches(r.get(f), alt) for f in fields for alt in alternatives
        )
    if name.startswith("_"):
        raise _Outcome(400, "not-supported", f"search parameter {name!r} is not supported")
    field = {"identifier": "identifier"}.get(
        name, re.sub(r"-([a-z])", lambda m: m.group(1).upper(), name)
    )

    def test(resource: Mapping[str, Any]) -> bool:
        if field not in resource:
            return False
        present = resource[field]
        values = present if isinstance(present, list) else [present]
        return any(_value_matches(v, alt) for v in values for alt in alternatives)

    return test


def _date_test(
    value: str, read: Callable[[Mapping[str, Any]], Any]
) -> Callable[[Mapping[str, Any]], bool]:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    bound = _instant(value[2:] if value[:2] in _PREFIXES else value)

    def test(resource: Mapping[str, Any]) -> bool:
        text = read(resource)
        if not text:
            return False
        at = _instant(text)
        return {
            "gt": at > bound,
            "ge": at >= bound,
            "lt": at < bound,
            "le": at <= bound,
            "eq": at == bound,
        }[prefix]

    return test


def _reference_matches(field: Any, wanted: str) -> bool:
    if isinstance(field, list):
        return any(_reference_matches(f, wanted) for f in field)
    if not isinstance(field, Mapping):
        return False
    reference = str(field.get("reference") or "")
    return (
        reference == wanted or reference == f"Patient/{wanted}" or reference.endswith(f"/{wanted}")
    )


def _token_matches(coding: Any, wanted: str) -> bool:
    if not isinstance(coding, Mapping):
        return False
    system, sep, code = wanted.rpartition("|")
    value = str(coding.get("code", coding.get("value")))
    if not sep:
        return value == wanted
    return value == code and str(coding.get("system") or "") == system


def _value_matches(value: Any, wanted: str) -> bool:
    if isinstance(value, str | bool | int | float):
        return str(value).lower() == wanted.lower()
    if isinstance(value, Mapping):
        if "coding" in value:
            return any(_token_matches(c, wanted) for c in value["coding"])
        if "value" in value or "code" in value:
            return _token_matches(value, wanted)
        if "reference" in value:
            return _reference_matches(value, wanted)
    return False
