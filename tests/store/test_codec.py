"""The codec's JSON: orjson where it can, the same values back as ``json`` gave."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import pytest

from fhirbridge.store._codec import dumps, loads_mapping
from fhirbridge.values import ResourceVersion, TransitionKind


@pytest.mark.parametrize(
    "raw",
    [
        # an ordinary resource
        b'{"resourceType":"Patient","id":"p1","name":[{"family":"M\\u00fcller"}]}',
        # NaN, which orjson refuses and json reads
        b'{"resourceType":"Observation","id":"o1","valueQuantity":{"value":NaN}}',
    ],
)
def test_parse_json_reads_what_json_reads(raw: bytes) -> None:
    """Whatever ``json.loads`` reads, ``ResourceVersion.parse_json`` reads the same."""
    expected, parsed = json.loads(raw), ResourceVersion.parse_json(raw)

    assert json.dumps(parsed, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_parse_json_reads_huge_integers_as_numbers() -> None:
    """An integer beyond 64 bits (never valid FHIR: integers are 32-bit) is read as the
    nearest float, as every FHIR decimal is; the journal keeps the raw bytes unchanged."""
    raw = b'{"resourceType":"Observation","id":"o2","valueInteger":123456789012345678901234}'

    assert math.isclose(ResourceVersion.parse_json(raw)["valueInteger"], 1.2345678901234568e23)
    assert ResourceVersion.from_json("ehr", raw).raw == raw


def test_parse_json_refuses_what_json_refuses() -> None:
    """Invalid JSON is a ValueError, as with ``json.loads``."""
    with pytest.raises(ValueError, match="Expecting"):
        ResourceVersion.parse_json(b'{"resourceType": "Patient",')


def test_big_integers_in_values_are_written_as_text() -> None:
    """``dumps`` writes an integer orjson cannot (beyond 64 bits) as its decimal text."""
    assert dumps({"n": 2**70}) == f'{{"n":"{2**70}"}}'


def test_dumps_round_trips_what_the_engine_stores() -> None:
    """Sorted, compact JSON; dates as ISO text, enums as values, sets as lists;
    ``loads_mapping`` gives the values back."""
    value = {
        "b": 1,
        "a": [1, (2, 3)],
        "at": datetime(2024, 5, 1, 8, 0, tzinfo=UTC),
        "day": date(2024, 5, 2),
        "kind": TransitionKind.DISCHARGE,
        "tags": {"x"},
        "name": "Müller",
        "ratio": 0.1,
    }
    text = dumps(value)

    assert text.startswith('{"a":[1,[2,3]],"at":"2024-05-01T08:00:00+00:00","b":1,')
    assert loads_mapping(text) == {
        "a": [1, [2, 3]],
        "at": "2024-05-01T08:00:00+00:00",
        "b": 1,
        "day": "2024-05-02",
        "kind": "discharge",
        "name": "Müller",
        "ratio": 0.1,
        "tags": ["x"],
    }
    assert math.isclose(loads_mapping(text)["ratio"], 0.1)
