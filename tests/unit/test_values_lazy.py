"""Versions built from bytes: the narrow decode agrees with parsing the whole resource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbridge.values import LazyResource, ResourceVersion, lazy_resource

DATA = Path(__file__).resolve().parents[1] / "data"


def _whole(raw: bytes) -> ResourceVersion | type[Exception]:
    """What ``from_json`` gave when it parsed every version whole: the parsed dict handed
    to it, with the bytes kept as they came."""
    try:
        parsed = json.loads(raw)
        built = ResourceVersion.from_json("s", parsed)
    except Exception as exc:
        return type(exc)
    return ResourceVersion(
        server="s",
        resource_type=built.resource_type,
        id=built.id,
        version_id=built.version_id if not built.version_id.startswith("h:") else "",
        last_updated=built.last_updated,
        raw=raw,
        resource=parsed,
    )


def _lazy(raw: bytes) -> ResourceVersion | type[Exception]:
    try:
        version = ResourceVersion.from_json("s", raw)
    except Exception as exc:
        return type(exc)
    if version.version_id.startswith("h:"):  # hashed from these bytes: blank it as above
        version = ResourceVersion(
            "s", version.resource_type, version.id, "", version.last_updated, raw, version.resource
        )
    return version


@pytest.mark.parametrize("path", sorted(DATA.glob("*.json")), ids=lambda p: p.name)
def test_fhir_examples_build_alike(path: Path) -> None:
    """The FHIR examples: same identity, and the same resource once read."""
    raw = path.read_bytes()
    lazy, whole = _lazy(raw), _whole(raw)
    assert lazy == whole
    assert isinstance(lazy, ResourceVersion) and isinstance(whole, ResourceVersion)
    assert dict(lazy.resource) == dict(whole.resource)


_value = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "2", "x"]), st.just({})
)


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "resourceType": _value | st.just("Observation"),
            "id": _value | st.just("o1"),
            "meta": _value
            | st.fixed_dictionaries({}, optional={"versionId": _value, "lastUpdated": _value}),
            "subject": _value | st.just({"reference": "Patient/1"}),
            "for": _value,
            "status": _value,
        },
    )
)
def test_any_head_builds_or_fails_alike(resource: dict[str, Any]) -> None:
    """Whatever the types of type, id and meta, both ways agree (or raise the same)."""
    raw = json.dumps(resource).encode()
    lazy, whole = _lazy(raw), _whole(raw)
    assert lazy == whole
    if isinstance(lazy, ResourceVersion):
        for name in ("subject", "for", "patient", "status"):
            assert lazy.resource.get(name, "absent") == resource.get(name, "absent")
            assert (name in lazy.resource) == (name in resource)


def test_patient_references_are_read_without_parsing_the_rest() -> None:
    """``get`` of a patient reference answers from the narrow decode; anything else parses
    the bytes once, and the resource then answers from the dict."""
    raw = b'{"resourceType":"Encounter","id":"e","subject":{"reference":"Patient/1"},"for":null}'
    resource = ResourceVersion.from_json("s", raw).resource
    assert isinstance(resource, LazyResource)
    assert resource.get("subject") == {"reference": "Patient/1"}
    assert resource.get("for", "default") is None  # present, null
    assert resource.get("patient", "default") == "default"  # absent
    assert "for" in resource and "patient" not in resource
    assert not resource.parsed
    assert resource["id"] == "e"
    assert resource.parsed
    assert resource == json.loads(raw) and len(resource) == 4


def test_stored_rows_come_back_lazy_or_parsed() -> None:
    """A row read back gives a lazy resource; what the narrow decode cannot read (a JSON
    array, NaN) is parsed at once, as before."""
    assert isinstance(lazy_resource(b'{"resourceType":"Patient","id":"p"}'), LazyResource)
    assert lazy_resource(b"[1]") == [1]
    nan = lazy_resource(b'{"resourceType":"Patient","id":"p","x":NaN}')
    assert isinstance(nan, dict) and nan["x"] != nan["x"]


ENCOUNTER_LATIN1 = (
    b'{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"IMP"},'
    b'"subject":{"reference":"Patient/1"},"text":{"status":"generated","div":"caf\xe9"}}'
)


def test_invalid_utf8_in_a_skipped_member_is_refused_as_the_whole_parse_refuses_it() -> None:
    """A Latin-1 byte in a member the narrow decode skips (a narrative from an old export)
    is refused when the version is built, the Encounter view and the index row too, exactly
    as parsing the whole document refuses it: nothing half-read reaches the journal."""
    from fhirbridge.detect.projection import EncounterView

    with pytest.raises(UnicodeDecodeError):
        json.loads(ENCOUNTER_LATIN1)
    with pytest.raises(UnicodeDecodeError):
        ResourceVersion.from_json("s", ENCOUNTER_LATIN1)
    with pytest.raises(UnicodeDecodeError):
        EncounterView.from_raw(ENCOUNTER_LATIN1)
    with pytest.raises(UnicodeDecodeError):
        lazy_resource(ENCOUNTER_LATIN1)


def test_valid_non_ascii_text_still_takes_the_narrow_path() -> None:
    """Accented names and narratives in UTF-8 are read lazily like any other version."""
    raw = ENCOUNTER_LATIN1.replace(b"caf\xe9", "café Zoë".encode())
    version = ResourceVersion.from_json("s", raw)
    assert isinstance(version.resource, LazyResource)
    assert not version.resource.parsed
    assert version.resource["text"]["div"] == "café Zoë"


def _nested(depth: int) -> bytes:
    return (
        b'{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/1"},"x":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


def test_deep_nesting_is_judged_by_the_fixed_limit_of_the_whole_parse_at_any_stack_depth() -> None:
    """msgspec's nesting limit is what is left of the recursion limit; a version the full
    parse accepts is built (and read back) however deep the caller's stack already is."""
    import sys

    raw = _nested(900)
    json.loads(raw)  # the whole parse accepts it

    def deep(frames: int) -> ResourceVersion:
        if frames:
            return deep(frames - 1)
        return ResourceVersion.from_json("s", raw)

    frames = sys.getrecursionlimit() - 150
    version = deep(frames)
    assert version.reference == "Observation/o1"
    assert lazy_resource(raw)["id"] == "o1"
