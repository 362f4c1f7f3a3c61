"""The notification parsers, pure, under garbage: they fail only with NotificationError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings

from fhirbridge.receiver._bounds import load_json
from fhirbridge.receiver._notify import (
    NotificationError,
    is_topic_notification,
    parse_message,
    parse_resource,
    parse_status,
    parse_topic_notification,
)
from fhirbridge.receiver._receiver import same_server
from tests._builders.receiver import BASE
from tests.fuzz._strategies import hostile_bodies
from tests.fuzz._tally import TALLY, examples

owns = same_server(BASE)


def parse_all(data: Any) -> None:
    """Every parser the receiver may apply to ``data``."""
    if is_topic_notification(data):
        parse_topic_notification(data, owns)
    for parse in (
        lambda: parse_message(data, owns),
        lambda: parse_resource(data),
        lambda: parse_status(data),
    ):
        try:
            parse()
        except NotificationError:
            continue
        except AttributeError:
            if not hasattr(data, "get"):  # parse_status takes a parsed mapping only
                continue
            raise


@settings(max_examples=examples(1000))
@given(body=hostile_bodies())
def test_parsers_fail_only_with_notification_error(body: tuple[str, bytes]) -> None:
    """Bounded reading and every parser raise NotificationError and nothing else; what is
    read is valid Unicode the journal can encode back."""
    TALLY["parsers: bodies"] += 1
    try:
        data = load_json(body[1])
    except NotificationError:
        return
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # no lone surrogate survived
    try:
        parse_all(data)
    except NotificationError:
        return
