"""Slow connections (slowloris) against both listeners: while many connections never finish a
request or a frame, ``/healthz``, a valid notification and a valid MLLP message are answered
within a second, and every slow connection is closed by the listener in bounded time.

``FHIRBRIDGE_SLOW_CONNECTIONS`` sets how many slow connections each test opens (200 by
default; the documented run in tests/fuzz/README.md uses 2,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx

from fhirbridge.sources.hl7v2 import END, START
from tests._builders.hl7 import FakeFhir, adt, msa
from tests._builders.receiver import AUTH, encounter
from tests.fuzz._harness import http_receiver, mllp_listener

SLOW = int(os.environ.get("FHIRBRIDGE_SLOW_CONNECTIONS", "200"))
WITHIN = 1.0  # seconds: the bound on each good request's answer


async def _hold(port: int, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload:
        writer.write(payload)
        await writer.drain()
    return reader, writer


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send one byte every ``every`` seconds until the peer closes (a classic slowloris)."""
    for byte in data:
        await asyncio.sleep(every)
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            return


async def _closed_by_peer(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the listener sent before closing the connection, or None if it stayed open."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        try:
            await writer.wait_closed()
        except ConnectionError:
            continue


async def test_http_receiver_outlives_slow_connections() -> None:
    """Connections that send nothing, half a request head, a head and part of a body, or a
    head a byte at a time: the good requests are answered within a second; each slow
    connection gets a 408 OperationOutcome (or is closed) by the time its deadline passes."""
    head = b"PUT /notify/Encounter/s HTTP/1.1\r\nHost: receiver\r\n"
    body_head = (
        b"PUT /notify/Encounter/e1 HTTP/1.1\r\nHost: receiver\r\nAuthorization: "
        + AUTH["Authorization"].encode()
        + b"\r\nContent-Length: 2000\r\n\r\n{"
    )
    kinds = [b"", head[:20], body_head, head]  # the last one trickles
    limits = {"header_timeout": 1.5, "body_timeout": 2.0, "max_connections": max(50, SLOW // 2)}
    async with http_receiver(**limits) as r:
        slow = []
        for n in range(SLOW):
            slow.append(await _hold(r.port, kinds[n % 4] if n % 4 != 3 else b""))
        trickles = [
            asyncio.create_task(_trickle(w, head, 0.2))
            for n, (_, w) in enumerate(slow)
            if n % 4 == 3
        ]
        timings: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{r.port}") as http:
            started = time.perf_counter()
            health = await http.get("/healthz")
            timings["healthz"] = time.perf_counter() - started
            started = time.perf_counter()
            put = await http.put(
                "/notify/Encounter/e1", content=json.dumps(encounter(1)), headers=AUTH
            )
            timings["notification"] = time.perf_counter() - started
        assert health.status_code == 200 and put.status_code == 200
        answers = await asyncio.gather(*(_closed_by_peer(reader, 6.0) for reader, _ in slow))
        for task in trickles:
            task.cancel()
        await _close([w for _, w in slow])
        await r.receiver.settle()
        assert r.bridge.store.snapshot("ehr", "Encounter", "e1") is not None
    still_open = sum(a is None for a in answers)
    outcomes = sum(a is not None and b"OperationOutcome" in a for a in answers)
    print(
        f"\nhttp: {SLOW} slow connections, answered in {timings}, {outcomes} got an "
        f"OperationOutcome, {still_open} still open after their deadline"
    )
    assert max(timings.values()) < WITHIN
    assert still_open == 0
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers if a is not None)


async def test_mllp_listener_outlives_slow_connections(fhir: FakeFhir) -> None:
    """Connections that send nothing, half a frame, or a frame a byte at a time: a valid
    message on a new connection is acknowledged (AA) within a second; each slow connection
    is closed (its partial frame dead-lettered) once it has been idle past the timeout or
    to make room."""
    partial = START + adt().encode()[:30]
    async with mllp_listener(fhir, idle_timeout=1.5, max_connections=100) as (port, listener):
        slow = [await _hold(port, partial if n % 3 == 1 else b"") for n in range(SLOW)]
        trickles = [
            asyncio.create_task(_trickle(w, partial, 0.2))
            for n, (_, w) in enumerate(slow)
            if n % 3 == 2
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.perf_counter()
        writer.write(START + adt().encode() + END + b"\r")
        await writer.drain()
        ack = await asyncio.wait_for(reader.readuntil(END + b"\r"), 5)
        answered = time.perf_counter() - started
        await _close([writer])
        answers = await asyncio.gather(*(_closed_by_peer(r, 6.0) for r, _ in slow))
        for task in trickles:
            task.cancel()
        await _close([w for _, w in slow])
    still_open = sum(a is None for a in answers)
    print(
        f"\nmllp: {SLOW} slow connections, AA in {answered:.3f} s, evicted "
        f"{listener.evicted}, refused {listener.refused}, {still_open} still open"
    )
    assert msa(ack[1:-2].decode())[1] == "AA"
    assert answered < WITHIN
    assert still_open == 0
