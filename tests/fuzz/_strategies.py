"""Hypothesis strategies for hostile input: valid notifications, the same with a part replaced
by garbage, JSON that is too deep or holds unstorable text, non-JSON bytes, and whole HTTP
requests (method, path, credentials, media type) around them."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import strategies as st

from tests._builders.receiver import AUTH, BASE, encounter, notification

DATA = Path(__file__).resolve().parents[1] / "data"
FHIR_KEYS = [
    "resourceType",
    "id",
    "type",
    "entry",
    "resource",
    "fullUrl",
    "parameter",
    "name",
    "part",
    "valueReference",
    "valueString",
    "valueCode",
    "reference",
    "focus",
    "eventCoding",
    "code",
    "system",
    "status",
    "meta",
    "versionId",
    "lastUpdated",
    "subject",
    "notificationEvent",
    "eventNumber",
    "subscription",
    "period",
    "class",
]
POISON = ["\\ud800", "\\udfff", "\\u0000", "\\udbff\\u0041", "\\ud83d"]


def davinci(name: str = "discharge") -> dict[str, Any]:
    """A Da Vinci notification message Bundle from tests/data."""
    path = DATA / f"davinci-{name}-notification-message-bundle-01.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def templates() -> list[tuple[str, dict[str, Any]]]:
    """``(path, body)`` of valid notifications of every style the receiver takes."""
    enc = encounter(1)
    return [
        ("/notify/Encounter/e1", enc),
        ("/notify", enc),
        ("/notify", notification("heartbeat", since=0)),
        ("/notify", notification("event-notification", 1, resources=(enc,))),
        ("/notify", notification("event-notification", 2, focus=f"{BASE}/Encounter/e1")),
        ("/notify/$process-message", davinci("discharge")),
        ("/notify", davinci("admit")),
    ]


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "Encounter", "Bundle", "message", "history", "../x", "Subscription/"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@st.composite
def mutated(draw: st.DrawFn, body: dict[str, Any]) -> Any:
    """``body`` with one to three places replaced by garbage, or deleted."""
    result: Any = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(result)
        path = draw(st.sampled_from(paths))
        garbage = draw(json_values)
        if not path:
            return garbage
        parent = result
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = garbage
    return result


def poisoned_text(draw: st.DrawFn, body: dict[str, Any]) -> bytes:
    """``body`` as JSON with an unstorable escape put inside one of its strings."""
    text = json.dumps(body)
    quotes = [i for i, c in enumerate(text) if c == '"']
    at = draw(st.sampled_from(quotes[1::2]))  # a closing quote: inside the string before it
    return (text[:at] + draw(st.sampled_from(POISON)) + text[at:]).encode()


def deep(draw: st.DrawFn) -> bytes:
    """JSON nested past the limit (up to far past the interpreter's recursion limit)."""
    depth = draw(st.sampled_from([65, 100, 1000, 5000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return (opener * depth + "1" + closer * depth).encode()


@dataclass(frozen=True)
class Hostile:
    """One hostile HTTP request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def describe(self) -> str:
        """A short label for failure reports."""
        return f"{self.method} {self.path} {self.body[:80]!r}"


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(path, body)``: a valid notification's path with a hostile body."""
    path, body = draw(st.sampled_from(templates()))
    kind = draw(st.sampled_from(["mutated", "poison", "deep", "bytes", "json", "truncated"]))
    if kind == "mutated":
        return path, json.dumps(draw(mutated(body))).encode()
    if kind == "poison":
        return path, poisoned_text(draw, body)
    if kind == "deep":
        return path, deep(draw)
    if kind == "bytes":
        return path, draw(st.binary(max_size=64))
    if kind == "json":
        return path, json.dumps(draw(json_values)).encode()
    text = json.dumps(body).encode()
    return path, text[: draw(st.integers(0, max(0, len(text) - 1)))]


@st.composite
def hostile_requests(draw: st.DrawFn) -> Hostile:
    """A hostile request: mostly authenticated with a hostile body; sometimes a wrong
    method, path, credential or media type."""
    path, body = draw(hostile_bodies())
    method = "PUT" if path.count("/") == 3 else "POST"
    headers = dict(AUTH)
    twist = draw(st.sampled_from(["none"] * 6 + ["method", "path", "auth", "media", "id"]))
    if twist == "method":
        method = draw(st.sampled_from(["GET", "DELETE", "PATCH", "OPTIONS", "PUT", "POST"]))
    elif twist == "path":
        path = draw(
            st.sampled_from(["/", "/notify/", "/notify/x", "/notify/a/b/c", "/metrics/x"])
            | st.text(alphabet="abc/$%.-_?#", max_size=20).map(lambda t: "/" + t)
        )
    elif twist == "auth":
        headers = draw(
            st.sampled_from([{}, {"Authorization": "Bearer x"}, {"X-Fhirbridge-Secret": ""}])
        )
    elif twist == "media":
        headers["Content-Type"] = draw(
            st.sampled_from(["text/plain", "application/fhir+xml", "multipart/form-data", "x"])
        )
    elif twist == "id":
        path = "/notify/" + draw(st.text(alphabet="Ea./%-_ 1", min_size=1, max_size=12))
        method = "PUT"
    return Hostile(method, path, headers, body)


_ids = itertools.count()


def is_outcome(answer: httpx.Response) -> bool:
    """Whether the answer is an OperationOutcome in FHIR JSON."""
    if not answer.headers.get("content-type", "").startswith("application/fhir+json"):
        return False
    try:
        return bool(answer.json().get("resourceType") == "OperationOutcome")
    except ValueError:
        return False


# -- valid notifications interleaved with garbage ------------------------------------------
def valid(kind: str) -> tuple[str, str, bytes, str]:
    """``(method, path, body, encounter id)`` of a valid notification for a fresh Encounter."""
    rid = f"f{next(_ids)}"
    enc = encounter(1, rid=rid)
    if kind == "put":
        return "PUT", f"/notify/Encounter/{rid}", json.dumps(enc).encode(), rid
    if kind == "post":
        return "POST", "/notify", json.dumps(enc).encode(), rid
    if kind == "topic":
        note = notification("event-notification", None, resources=(enc,))
        return "POST", "/notify", json.dumps(note).encode(), rid
    message = davinci("discharge")
    focus = next(e for e in message["entry"] if e["resource"]["resourceType"] == "Encounter")
    focus["resource"]["id"] = rid
    return "POST", "/notify/$process-message", json.dumps(message).encode(), rid
