"""The receiver's HTTP/1.1 connections under uvicorn, bounded in time and in number.

uvicorn waits for a request head for as long as the peer likes and accepts connections until
file descriptors run out, so a few hundred connections that never finish a request (a
slowloris) starve ``/healthz`` and every sender. :class:`GuardedHttp` (uvicorn's httptools
protocol with three additions) closes that:

- a request head must arrive within ``header_timeout`` seconds of the connection (or of the
  first byte of the next request on a kept-alive one), else 408 and the connection closes;
  and it may be at most ``max_head`` bytes, else 431;
- a body must be complete within ``body_timeout`` seconds of its head (the app answers 408
  itself when it reads the body; the connection is closed a moment later as a backstop);
- at most ``max_connections`` are open: one more first evicts the connection that has waited
  longest for a request head (with a 408); if every connection is busy with a request, the
  newcomer gets 429 with ``Retry-After`` and is closed.

Every answer written here, and uvicorn's own 400 for unparseable HTTP, is an OperationOutcome.
Idle kept-alive connections close after uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fhirbridge.receiver.app import outcome_json

__all__ = ["ConnectionLimits", "GuardedHttp", "guarded_protocol"]

log = structlog.get_logger(__name__)
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}
_BACKSTOP = 2.0  # seconds after body_timeout before the connection itself is closed


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many connections may be open."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    max_head: int = 65536


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with request timeouts and a connection bound."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    _timer: asyncio.TimerHandle | None
    _in_head: bool
    _in_body: bool
    _head_bytes: int
    _opened: float

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection (evicting a slow one when full) and start its head timer."""
        self._timer, self._in_head, self._in_body, self._head_bytes = None, True, False, 0
        self._opened = self.loop.time()
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict():
            self._answer(429, "throttled", "too many connections; retry later", retry=True)
            return
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timer with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a request head past ``max_head`` bytes is a 431."""
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        too_large = self._in_head and self._head_bytes > self.limits.max_head
        if too_large and not self.transport.is_closing():
            text = f"the request head is larger than {self.limits.max_head} bytes"
            self._answer(431, "too-costly", text)

    def on_message_begin(self) -> None:
        """A request starts: its head must arrive within ``header_timeout``."""
        super().on_message_begin()
        self._in_head = True
        if self._timer is None:
            self._arm(self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        """The head arrived: now the body has ``body_timeout``."""
        self._in_head, self._in_body, self._head_bytes = False, True, 0
        self._arm(self.limits.body_timeout + _BACKSTOP)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The whole request arrived: no deadline while the app answers."""
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Answered: the connection waits for a next request (uvicorn's keep-alive timer),
        unless the body of this one is still coming (its deadline still runs)."""
        self._in_head, self._head_bytes = not self._in_body, 0
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """Unparseable HTTP: a 400 OperationOutcome instead of uvicorn's plain text."""
        self._answer(400, "structure", msg)

    # -- internals ---------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            log.info("receiver_request_timeout", phase="head")
            text = f"no complete request head within {self.limits.header_timeout:g} s"
            self._answer(408, "timeout", text)
        else:  # the body is late and the app is not answering it: just close
            log.info("receiver_request_timeout", phase="body")
            self.transport.close()

    def _evict(self) -> bool:
        """Close the open connection that has waited longest for a request head."""
        waiting = [
            c
            for c in self.connections
            if c is not self
            and isinstance(c, GuardedHttp)
            and c._in_head
            and (c.cycle is None or c.cycle.response_complete)
            and not c.transport.is_closing()
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._opened)
        log.info("receiver_connection_evicted", open=len(self.connections))
        oldest._answer(408, "timeout", "closed to admit another connection")
        return True

    def _answer(self, status: int, code: str, text: str, *, retry: bool = False) -> None:
        body = outcome_json(code, text)
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"content-type: application/fhir+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if retry:
            head.append(b"retry-after: 1\r\n")
        self._disarm()
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttp]:
    """A :class:`GuardedHttp` class bound to ``limits`` (what ``uvicorn.Config(http=...)``
    takes)."""
    attributes: dict[str, Any] = {"limits": limits}
    return type("GuardedHttp", (GuardedHttp,), attributes)
