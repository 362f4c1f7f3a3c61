"""Hostile HL7 v2 over MLLP: every malformed frame gets an ACK with a reason, or a clean close
with a dead letter; never a traceback and a dropped connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from fhirbridge.sources._v2map import V2Error, V2Limits, check_header, read_adt
from fhirbridge.sources.hl7v2 import MllpListener, RawMessage, build_ack
from fhirbridge.store import MemoryStore
from tests._builders.hl7 import FakeFhir, adt, exchange, make_bridge, msa, reasons

CR = "\r"


@pytest.fixture
async def listener(fhir: FakeFhir) -> AsyncIterator[MllpListener]:
    """A listener with small bounds (no background processing) on a free port."""
    bridge = make_bridge(fhir, MemoryStore())
    mllp = MllpListener(
        bridge,
        process=False,
        limits=V2Limits(segments=20, field=200),
        idle_timeout=0.3,
        max_connections=3,
    )
    await mllp.start("127.0.0.1", 0)
    yield mllp
    await mllp.aclose()
    await bridge.aclose()


def port(listener: MllpListener) -> int:
    """The listener's bound port."""
    assert listener._server is not None
    return int(listener._server.sockets[0].getsockname()[1])


@pytest.mark.parametrize(
    ("frame", "where"),
    [
        (b"MSH|ADT|SEKMET|||20260101||ADT^A01|X1|P|2.5", "MSH-2"),  # no encoding characters
        (b"MSH|^^^^ADT|X||||20260101||ADT^A01|X1|P|2.5", "MSH-2"),  # encoding chars repeated
        (b"MSH|", "MSH-2"),  # nothing after the field separator
        (b"MSH", "MSH"),  # not even a field separator
        (b"MSHA^~\\&|x", "MSH-1"),  # a letter as field separator
        (b"MSH|^~\\&", "MSH-2"),  # encoding characters but no field after them
        (adt().replace("DOE", "D\x00E").encode(), "the message holds a NUL"),  # PostgreSQL
    ],
)
async def test_unreadable_msh_gets_ar_with_a_reason(
    listener: MllpListener, frame: bytes, where: str
) -> None:
    """An MSH python-hl7 cannot read is refused with AR naming the field, and dead-lettered;
    the connection stays usable for the next message."""
    answer = msa(await exchange(port(listener), frame))
    assert answer[1] == "AR" and answer[3].startswith(where)
    assert len(listener.bridge.store.dead_letters()) == 1
    assert msa(await exchange(port(listener), adt().encode()))[1] == "AA"


async def test_too_many_segments_or_too_long_a_field_is_ar(listener: MllpListener) -> None:
    """Segment count and field length are bounded before the message is parsed."""
    many = adt() + "NTE|1|x\r" * 30
    answer = msa(await exchange(port(listener), many.encode()))
    assert answer[1] == "AR" and "more than 20" in answer[3]
    long = adt(pid={5: "X" * 500}).encode()
    answer = msa(await exchange(port(listener), long))
    assert answer[1] == "AR" and "more than 200" in answer[3]
    assert len(reasons(listener.bridge.store)) == 2


async def test_an_unfinished_frame_is_dead_lettered_at_the_idle_timeout(
    listener: MllpListener,
) -> None:
    """A connection that sends half a frame and goes quiet is closed after idle_timeout, and
    what it sent is a dead letter."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port(listener))
    writer.write(b"\x0b" + adt().encode()[:40])
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no ACK
    writer.close()
    assert reasons(listener.bridge.store) == ["no complete frame within 0.3 s"]


async def test_a_frame_cut_by_the_sender_closing_is_dead_lettered(listener: MllpListener) -> None:
    """A connection closed mid-frame leaves a dead letter of what arrived."""
    _, writer = await asyncio.open_connection("127.0.0.1", port(listener))
    writer.write(b"\x0b" + adt().encode()[:40])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if reasons(listener.bridge.store):
            break
        await asyncio.sleep(0.01)
    assert reasons(listener.bridge.store) == ["the connection closed in the middle of a frame"]


async def test_past_the_bound_the_longest_idle_connection_makes_room(
    listener: MllpListener,
) -> None:
    """With max_connections open and idle, one more closes the one that has waited longest
    (what it had sent of a frame is dead-lettered) and is served."""
    listener.idle_timeout = 10.0  # only eviction closes connections here
    held = []
    try:
        for _ in range(3):
            held.append(await asyncio.open_connection("127.0.0.1", port(listener)))
            held[-1][1].write(b"\x0bMSH|")
            await asyncio.sleep(0.02)
        ack = msa(await exchange(port(listener), adt().encode()))
        assert ack[1] == "AA"
        assert await asyncio.wait_for(held[0][0].read(), 5) == b""  # the oldest was closed
        assert listener.evicted == 1 and listener.refused == 0
        assert reasons(listener.bridge.store) == ["closed to admit another connection"]
    finally:
        for _, writer in held:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize(
    "text",
    [
        "MSH|ADT|SEKMET|||20260101||ADT^A01|X1|P|2.5\r",
        "MSH|^^^^ADT|X||||20260101||ADT^A01|X1|P|2.5\r",
        "MSH|\r",
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X\x00|P|2.5\r",
    ],
)
def test_acks_for_unreadable_headers_are_well_formed(text: str) -> None:
    """build_ack falls back to its own MSH when the message's cannot be read."""
    ack = build_ack(RawMessage(text.encode()), "AR", "bad", datetime(2026, 1, 1, tzinfo=UTC))
    segments = ack.decode().split(CR)
    assert segments[0].startswith("MSH|^~\\&|")
    assert segments[1].startswith("MSA|AR|")


def test_check_header_accepts_the_usual_and_the_truncation_character() -> None:
    """``^~\\&`` and v2.7's ``^~\\&#`` are valid encoding characters."""
    check_header("MSH|^~\\&|A\r")
    check_header("MSH|^~\\&#|A\r")
    with pytest.raises(V2Error, match="MSH-2"):
        read_adt("MSH|^~|A\r")
