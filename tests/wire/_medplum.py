"""A small stateful stand-in for a server that behaves as issue reports describe Medplum 5:

- the CapabilityStatement says ``versioning: "versioned"`` (not ``versioned-update``) and
  declares no ``conditionalCreate``, yet ``If-Match`` is enforced (412 on a stale version);
- version ids are UUIDs; ``Location`` has no ``/_history/{vid}``;
- an update with identical content makes no new version;
- ``_lastUpdated`` compares exact instants (``gt…:10Z`` matches ``…:10.148Z``, ``le…:10Z``
  does not); minute precision answers 400;
- no ``Bundle.total``; no type-level ``_history`` (404);
- transactions honour ``ifNoneExist``.

It is a respx side effect: ``router.route(host=...).mock(side_effect=server.handle)``.
"""

from __future__ import annotations

import json
import operator
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from fhirbridge.config import WATCHED_TYPES

BASE = "https://medplum.example.org/fhir/R4"
STATEMENT = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [
        {
            "mode": "server",
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "resource": [
                {
                    "type": t,
                    "versioning": "versioned",
                    "interaction": [
                        {"code": c} for c in ("read", "create", "update", "search-type")
                    ],
                    "searchParam": [{"name": "_lastUpdated"}],
                }
                for t in (*WATCHED_TYPES, "Basic")
            ],
        }
    ],
}
_COMPARE = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_MINUTE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


def _outcome(status: int, text: str) -> httpx.Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "details": {"text": text}}],
    }
    return httpx.Response(status, json=body)


class MedplumLike:
    """The state and the answers; ``requests`` records (method, path) of each call."""

    def __init__(self, *, clock_start: datetime | None = None) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.now = clock_start or datetime(2026, 3, 1, 10, 0, 10, 148000, tzinfo=UTC)
        self.forbidden: set[str] = set()

    def _tick(self) -> str:
        self.now += timedelta(milliseconds=137)
        return self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _store(self, rtype: str, body: dict[str, Any], rid: str | None = None) -> dict[str, Any]:
        rid = rid or str(uuid.uuid4())
        stored = {**body, "id": rid, "meta": {**(body.get("meta") or {})}}
        stored["meta"]["versionId"] = str(uuid.uuid4())
        stored["meta"]["lastUpdated"] = self._tick()
        self.resources[(rtype, rid)] = stored
        return stored

    def _written(self, status: int, stored: dict[str, Any], rtype: str) -> httpx.Response:
        return httpx.Response(
            status,
            json=stored,
            headers={
                "Location": f"{BASE}/{rtype}/{stored['id']}",  # no /_history/{vid}
                "ETag": f'W/"{stored["meta"]["versionId"]}"',
            },
        )

    def _matches(self, rtype: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = [r for (t, _), r in self.resources.items() if t == rtype]
        for name, value in params:
            if name == "_id":
                found = [r for r in found if r["id"] == value]
            elif name == "identifier":
                system, _, code = value.rpartition("|")
                found = [
                    r
                    for r in found
                    if any(
                        i.get("value") == code and (not system or i.get("system") == system)
                        for i in r.get("identifier") or ()
                    )
                ]
            elif name == "_lastUpdated":
                prefix, stamp = value[:2], value[2:]
                moment = datetime.fromisoformat(stamp)  # exact instant, whatever its precision
                compare = _COMPARE[prefix]
                found = [
                    r
                    for r in found
                    if compare(datetime.fromisoformat(r["meta"]["lastUpdated"]), moment)
                ]
        return found

    def _conditional(self, rtype: str, query: str) -> list[dict[str, Any]]:
        return self._matches(rtype, parse_qsl(query))

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request."""
        path = urlsplit(str(request.url)).path.removeprefix(urlsplit(BASE).path).strip("/")
        self.requests.append((request.method, path))
        parts = path.split("/") if path else []
        params = list(parse_qsl(request.url.query.decode()))
        if parts == ["metadata"]:
            return httpx.Response(200, json=STATEMENT)
        if parts and parts[0] in self.forbidden:
            return _outcome(403, "Forbidden")
        if request.method == "POST" and not parts:
            return self._transaction(json.loads(request.content))
        rtype = parts[0] if parts else ""
        if len(parts) == 2 and parts[1] == "_history":
            return _outcome(404, "Not found")
        if request.method == "GET" and len(parts) == 1:
            for name, value in params:
                if name == "_lastUpdated" and _MINUTE.match(value[2:]):
                    return _outcome(400, "Invalid date")
            found = self._matches(rtype, params)
            return httpx.Response(
                200,
                json={
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": r, "search": {"mode": "match"}} for r in found],
                },
            )
        if request.method == "POST" and len(parts) == 1:
            condition = request.headers.get("if-none-exist")
            if condition:
                existing = self._conditional(rtype, condition)
                if existing:
                    return self._written(200, existing[0], rtype)
            return self._written(201, self._store(rtype, json.loads(request.content)), rtype)
        key = (rtype, parts[1]) if len(parts) > 1 else ("", "")
        current = self.resources.get(key)
        if request.method == "GET" and len(parts) == 2:
            return httpx.Response(200, json=current) if current else _outcome(404, "Not found")
        if request.method == "DELETE" and len(parts) == 2:
            self.resources.pop(key, None)
            return httpx.Response(200, json={})
        if request.method == "PUT" and len(parts) == 2:
            body = json.loads(request.content)
            if current is not None:
                match = request.headers.get("if-match")
                if match and match.strip('W/"') != current["meta"]["versionId"]:
                    return _outcome(412, "Precondition Failed")
                same = {k: v for k, v in body.items() if k not in ("meta", "id")} == {
                    k: v for k, v in current.items() if k not in ("meta", "id")
                }
                if same:  # identical content: no new version
                    return self._written(200, current, rtype)
            return self._written(200, self._store(rtype, body, parts[1]), rtype)
        return _outcome(400, f"unsupported {request.method} {path}")

    def _transaction(self, bundle: dict[str, Any]) -> httpx.Response:
        entries = []
        for entry in bundle.get("entry") or ():
            request = entry["request"]
            rtype = request["url"].split("?")[0]
            existing = (
                self._conditional(rtype, request["ifNoneExist"])
                if request.get("ifNoneExist")
                else []
            )
            if existing:
                entries.append({"response": {"status": "200 OK"}, "resource": existing[0]})
                continue
            stored = self._store(rtype, entry["resource"])
            entries.append(
                {
                    "response": {"status": "201 Created", "location": f"{rtype}/{stored['id']}"},
                    "resource": stored,
                }
            )
        return httpx.Response(
            200,
            json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries},
        )
