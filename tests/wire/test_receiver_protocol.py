"""The receiver's HTTP connections under uvicorn: unfinished requests time out with 408,
unparseable HTTP is a 400, both as OperationOutcomes, and the connection bound holds."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests._builders.receiver import AUTH, encounter
from tests.fuzz._harness import http_receiver


async def raw_exchange(port: int, data: bytes, within: float = 5.0) -> bytes:
    """Send ``data`` on a new connection; what came back before the server closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        await writer.wait_closed()


def is_outcome_response(answer: bytes, status: int) -> bool:
    """Whether raw HTTP ``answer`` has ``status`` and an OperationOutcome body in FHIR JSON."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return (
        head.startswith(b"HTTP/1.1 %d" % status)
        and b"application/fhir+json" in head.lower()
        and json.loads(body)["resourceType"] == "OperationOutcome"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",  # connects and says nothing
        b"POST /notify HTTP/1.1\r\nHost: x\r\n",  # half a request head
    ],
)
async def test_an_unfinished_request_head_gets_408(data: bytes) -> None:
    """No complete request head within header_timeout: a 408 OperationOutcome, then close."""
    async with http_receiver(header_timeout=0.3) as r:
        answer = await raw_exchange(r.port, data)
    assert is_outcome_response(answer, 408)


async def test_a_body_that_never_completes_gets_408() -> None:
    """A head that promises more body than arrives: 408 after body_timeout."""
    head = (
        b"PUT /notify/Encounter/e1 HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + AUTH["Authorization"].encode()
        + b"\r\nContent-Length: 500\r\n\r\n{"
    )
    async with http_receiver(body_timeout=0.3) as r:
        answer = await raw_exchange(r.port, head)
        assert r.bridge.store.dead_letters() == []
    assert is_outcome_response(answer, 408)


async def test_the_next_request_on_a_kept_alive_connection_has_a_head_deadline() -> None:
    """After a first answer, a second request that stops half-way is timed out too."""
    body = json.dumps(encounter(1)).encode()
    first = (
        b"PUT /notify/Encounter/e1 HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + AUTH["Authorization"].encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    async with http_receiver(header_timeout=0.3, keep_alive_timeout=60) as r:
        answer = await raw_exchange(r.port, first + b"GET /healthz HTTP/1.1\r\nHo")
    assert answer.startswith(b"HTTP/1.1 200")
    assert is_outcome_response(answer[answer.index(b"HTTP/1.1 408") :], 408)


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # TLS to a plain port
        b"NONSENSE\r\n\r\n",  # no request line
    ],
)
async def test_unparseable_http_is_a_400_outcome(data: bytes) -> None:
    """What the HTTP parser refuses is a 400 OperationOutcome, not uvicorn's plain text."""
    async with http_receiver() as r:
        answer = await raw_exchange(r.port, data)
    assert is_outcome_response(answer, 400)


async def test_a_request_head_past_the_bound_is_431() -> None:
    """A head larger than max_header_bytes, complete or not, is a 431 OperationOutcome."""
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000
    async with http_receiver(max_header_bytes=8192) as r:
        answer = await raw_exchange(r.port, huge)
    assert is_outcome_response(answer, 431)


async def test_connections_past_the_bound_evict_the_slowest() -> None:
    """At max_connections, a new connection closes the one waiting longest for a head (408)
    and is served itself."""
    async with http_receiver(max_connections=3, header_timeout=30) as r:
        held = [await asyncio.open_connection("127.0.0.1", r.port) for _ in range(3)]
        await asyncio.sleep(0.05)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = await raw_exchange(r.port, request)
        evicted = await asyncio.wait_for(held[0][0].read(), 5)
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200")
    assert is_outcome_response(evicted, 408)
