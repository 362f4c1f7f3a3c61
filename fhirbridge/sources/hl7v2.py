"""HL7 v2 ADT source: v2 events journalled as new versions of the server's own resources.

Many hospitals send ADT over v2 long before (or instead of) FHIR notifications. Each message
is read with python-hl7 and mapped per the V2-to-FHIR IG (:mod:`._v2map`); the Encounter it
names is found on the FHIR server by visit number (PV1-19) and the Patient by MRN (PID-3), so
the Tasks the engine writes reference resources on that server. The server's Encounter with
the message laid over it is journalled as version ``v2:<MSH-10>`` stamped with MSH-7, and
detection sees the v2 event as a change of that Encounter (a repeated message is the same
version and is dropped; the server's own later version of the same change finds nothing new).
A death (PID-29/30, or an A03 to "expired") is journalled as a version of the Patient.

A message that cannot be read, names nothing on the server, or is an event not handled goes
to the dead letters with the reason, and the run goes on. Over MLLP
(:class:`MllpListener`), the ACK (``MSA|AA``) is sent only after the journal append
returned; ``AR``/``AE`` carry the reason. Every frame gets an ACK or, when no frame can be
read (too large, unfinished when the connection goes idle or closes), is dead-lettered and
the connection closed: the listener never drops a connection with a traceback.

This source only journals versions: what it journalled is processed and written by the
engine's one pass loop, ``run_pass`` of the :class:`V2Engine` it is given (a
:class:`fhirbridge.Bridge`), never by code of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import hl7
import structlog

from fhirbridge.clock import Clock
from fhirbridge.detect import local_reference
from fhirbridge.errors import FhirBridgeError, FhirError, StoreError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.sources._v2map import (
    AdtMessage,
    V2Error,
    V2Limits,
    V2Tables,
    check_frame,
    check_header,
    default_tables,
    overlay_encounter,
    overlay_patient,
    read_adt,
)
from fhirbridge.store.base import Store
from fhirbridge.values import ResourceVersion, parse_instant

if TYPE_CHECKING:
    from fhirbridge.config import Hl7Config
    from fhirbridge.rules.calendar import BusinessCalendar

__all__ = [
    "MllpListener",
    "Outcome",
    "PassFigures",
    "RawMessage",
    "V2Adapter",
    "V2Engine",
    "V2Error",
    "V2Limits",
    "V2Stats",
    "build_ack",
    "ingest_hl7",
    "split_messages",
]

log = structlog.get_logger(__name__)
SOURCE = "hl7v2"
START, END = b"\x0b", b"\x1c"  # MLLP framing: <VT> message <FS><CR>
_ENVELOPE = (b"FHS", b"BHS", b"FTS", b"BTS")
_LINES = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message's segments joined by ``\\r``; ``error`` when the chunk is no message."""

    data: bytes
    error: str = ""

    @property
    def text(self) -> str:
        """Decoded: UTF-8 (v2.8's preferred set), else Latin-1 (never fails)."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            return self.data.decode("latin-1")


def split_messages(data: bytes) -> list[RawMessage]:
    """Messages in a file or stream: MLLP bytes and a BOM stripped; ``\\r``, ``\\n`` or
    ``\\r\\n`` between segments; FHS/BHS/BTS/FTS envelopes dropped (each ends the message
    before it). Segments outside any message come back as one chunk with an ``error``."""
    text = data.replace(START, b"\r").replace(END, b"\r").removeprefix(b"\xef\xbb\xbf")
    out: list[RawMessage] = []
    current: list[bytes] = []
    stray: list[bytes] = []

    def flush() -> None:
        if current:
            out.append(RawMessage(b"\r".join(current) + b"\r"))
        if stray:
            names = ", ".join(dict.fromkeys(s[:3].decode("latin-1") for s in stray))
            reason = f"{names} segment(s) outside any message (no MSH before them)"
            out.append(RawMessage(b"\r".join(stray) + b"\r", error=reason))
        current.clear()
        stray.clear()

    for line in _LINES.split(text):
        segment = line.strip(b" \t\x00").removeprefix(b"\xef\xbb\xbf")
        if not segment:
            continue
        if segment[:3] in _ENVELOPE or segment[:3] == b"MSH":
            flush()
            if segment[:3] == b"MSH":
                current.append(segment)
        else:
            (current if current else stray).append(segment)
    flush()
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: its ACK code, the reason, the versions newly journalled."""

    control_id: str
    ack: str
    reason: str = ""
    versions: tuple[ResourceVersion, ...] = ()
    duplicate: bool = False


class PassFigures(Protocol):
    """What a pass of the engine reports back (``RunStats`` is one)."""

    @property
    def transitions(self) -> int:
        """Transitions detected."""

    @property
    def created(self) -> int:
        """Tasks created."""

    @property
    def existing(self) -> int:
        """Tasks that were already there."""


class V2Engine(Protocol):
    """The engine this source journals for and hands its versions to (a ``Bridge``)."""

    @property
    def client(self) -> FhirClient | None:
        """Where the Encounters and Patients messages name are looked up."""

    @property
    def store(self) -> Store:
        """The journal."""

    @property
    def server(self) -> str:
        """The configured server's name."""

    @property
    def clock(self) -> Clock:
        """The clock (ACK timestamps)."""

    @property
    def calendar(self) -> BusinessCalendar:
        """Its time zone reads message times without an offset."""

    async def run_pass(self, fresh: Sequence[ResourceVersion] = ()) -> PassFigures:
        """Process ``fresh`` and whatever else is pending, and write: the one pass loop."""


@dataclass(slots=True)
class V2Stats:
    """What an ingest (or a listener so far) did, and what its passes found and wrote."""

    messages: int = 0
    journalled: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    passes: int = 0
    transitions: int = 0
    created: int = 0
    existing: int = 0

    def count(self, outcome: Outcome) -> None:
        """Add one message's outcome."""
        self.messages += 1
        self.journalled += len(outcome.versions)
        self.duplicates += outcome.duplicate
        self.dead_letters += outcome.ack != "AA"

    def add(self, figures: PassFigures) -> None:
        """Add what one pass of the engine did."""
        self.passes += 1
        self.transitions += figures.transitions
        self.created += figures.created
        self.existing += figures.existing

    def summary(self) -> str:
        """One human line."""
        line = (
            f"messages {self.messages}: journalled {self.journalled} new versions, "
            f"repeats {self.duplicates}, dead letters {self.dead_letters}"
        )
        if self.passes:
            line += (
                f"; transitions {self.transitions}, tasks created {self.created}"
                f" (already there {self.existing})"
            )
        return line


def _token(system: str, value: str) -> str:
    """A token search value, with FHIR search escapes for ``\\ | , $``."""
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return f"{system}|{value}"


class V2Adapter:
    """Reads ADT messages, finds what they name on the engine's server, journals the result.

    ``visit_system`` and ``mrn_system`` default to ``mappings/hl7v2.yaml``; times without an
    offset are read in the engine's time zone. Keeps the latest v2 version built for each
    Encounter (bounded), so an A08 after an A01 in one feed keeps the A01's status.
    """

    def __init__(
        self,
        bridge: V2Engine,
        *,
        visit_system: str | None = None,
        mrn_system: str | None = None,
        tables: V2Tables | None = None,
        remember: int = 10_000,
    ) -> None:
        if bridge.client is None:
            raise FhirError("the HL7 v2 source needs a FHIR client to find Encounters")
        self.bridge = bridge
        self.client = bridge.client
        self.tables = tables or default_tables()
        self.visit_system = visit_system or self.tables.identifiers.visit_system
        self.mrn_system = mrn_system or self.tables.identifiers.mrn_system
        self.tz = ZoneInfo(bridge.calendar.tz)
        self._latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._remember = remember

    async def handle(self, raw: RawMessage) -> Outcome:
        """Journal one message, or dead-letter it with the reason. Server and journal
        failures (FhirError, StoreError) propagate: a retry may fix them."""
        control_id = ""
        try:
            if raw.error:
                raise V2Error("", raw.error)
            message = read_adt(raw.text, self.tables, self.tz)
            control_id = message.control_id
            versions = await self._versions(message)
        except V2Error as exc:
            control_id = control_id or exc.control_id
            self.bridge.store.dead_letter(SOURCE, control_id or "?", exc.message, raw.data)
            log.warning("hl7_dead_letter", control_id=control_id, field=exc.where, ack=exc.ack_code)
            return Outcome(control_id, exc.ack_code, exc.message)
        new = self.bridge.store.append(versions)
        for version in new:
            if version.resource_type == "Encounter":
                self._keep(version.id, dict(version.resource))
        log.info("hl7_journalled", control_id=control_id, trigger=message.event, new=len(new))
        return Outcome(control_id, "AA", versions=tuple(new), duplicate=not new)

    async def _versions(self, message: AdtMessage) -> list[ResourceVersion]:
        encounter = await self._find("Encounter", self.visit_system, message.visit_number, "PV1-19")
        patient = await self._find("Patient", self.mrn_system, message.mrn, "PID-3")
        subject = local_reference(encounter.get("subject"))
        if subject != f"Patient/{patient['id']}":
            raise V2Error(
                "PID-3",
                f"Encounter/{encounter['id']} (PV1-19) belongs to {subject}, not to "
                f"Patient/{patient['id']} found by MRN",
                code="AE",
            )
        base = self._base(encounter)
        resources = [overlay_encounter(base, message, self.visit_system)]
        dead = overlay_patient(patient, message)
        if dead is not None:
            resources.append(dead)
        return [ResourceVersion.from_json(self.bridge.server, r) for r in resources]

    async def _find(self, kind: str, system: str, value: str, where: str) -> dict[str, Any]:
        found = [
            r
            for r in await self.client.search_all(kind, {"identifier": _token(system, value)})
            if r.get("resourceType") == kind
            and any(
                i.get("system") == system and i.get("value") == value
                for i in r.get("identifier") or ()
            )
        ]
        if len(found) != 1:
            many = f"{len(found)} {kind}s have" if found else f"no {kind} has"
            problem = f"{many} identifier {system}|{value} on server {self.bridge.server!r}"
            raise V2Error(where, problem, code="AE")
        return found[0]

    def _base(self, server: dict[str, Any]) -> dict[str, Any]:
        """The server's Encounter, or the last v2 version built for it when that is newer."""
        ours = self._latest.get(str(server.get("id")))
        if ours is None:
            return server
        theirs_at = parse_instant((server.get("meta") or {}).get("lastUpdated"))
        ours_at = parse_instant(ours["meta"]["lastUpdated"])
        return (
            ours if theirs_at is None or (ours_at is not None and ours_at > theirs_at) else server
        )

    def _keep(self, encounter_id: str, resource: dict[str, Any]) -> None:
        self._latest[encounter_id] = resource
        self._latest.move_to_end(encounter_id)
        while len(self._latest) > self._remember:
            self._latest.popitem(last=False)


async def ingest_hl7(
    bridge: V2Engine,
    data: bytes,
    *,
    visit_system: str | None = None,
    mrn_system: str | None = None,
    tables: V2Tables | None = None,
) -> V2Stats:
    """Journal every ADT message in ``data`` (a file or a captured stream), then hand the
    new versions to one pass of the engine (``bridge.run_pass``)."""
    adapter = V2Adapter(bridge, visit_system=visit_system, mrn_system=mrn_system, tables=tables)
    stats = V2Stats()
    fresh: list[ResourceVersion] = []
    for raw in split_messages(data):
        outcome = await adapter.handle(raw)
        stats.count(outcome)
        fresh.extend(outcome.versions)
    stats.add(await bridge.run_pass(fresh))
    return stats


def _readable_header(text: str) -> bool:
    try:
        check_header(text)
    except V2Error:
        return False
    return True


def build_ack(raw: RawMessage | None, code: str, reason: str, now: datetime) -> bytes:
    """An original-mode ACK for ``raw``: sender and receiver swapped, ``MSA|<code>|<MSH-10>|
    <reason>``; a minimal one when the message has no usable MSH."""
    stamp, ack_id = now.strftime("%Y%m%d%H%M%S%z"), uuid.uuid4().hex[:20]
    text = f"MSH|^~\\&|FHIRBRIDGE||||{stamp}||ACK|{ack_id}|P|2.5\rMSA|{code}|"
    if raw is not None and not raw.error and _readable_header(raw.text):
        with contextlib.suppress(hl7.HL7Exception, ValueError, IndexError, AssertionError):
            msh = hl7.parse(raw.text).segment("MSH")
            sep, field = str(msh(1)), [str(msh(n)) if n < len(msh) else "" for n in range(13)]
            comp = field[2][:1] or "^"
            event = field[9].split(comp)[1] if comp in field[9] else ""
            head = [field[2], field[5], field[6], field[3], field[4], stamp, ""]
            tail = [f"ACK{comp}{event}{comp}ACK" if event else "ACK", ack_id, field[11], field[12]]
            text = f"MSH{sep}" + sep.join(head + tail) + f"\rMSA{sep}{code}{sep}{field[10]}"
    try:
        ack = hl7.parse(text)
        msa = ack.segment("MSA")
    except (hl7.HL7Exception, KeyError, ValueError, IndexError, AssertionError):
        ack = hl7.parse(f"MSH|^~\\&|FHIRBRIDGE||||{stamp}||ACK|{ack_id}|P|2.5\rMSA|{code}|")
        msa = ack.segment("MSA")
    if reason:
        msa.assign_field(ack.escape(reason[:200]), 3)
    return str(ack).encode("utf-8")


@dataclass(slots=True)
class _Peer:
    """One MLLP connection: since when it has waited for a frame (None while answering)."""

    waiting_since: float | None
    evicted: bool = False


class MllpListener:
    """Receives ADT over MLLP (``asyncio.start_server``) and acknowledges each message once
    it is durable; unless ``process`` is False, a worker then runs the engine's pass in the
    background.

    Bounds: a frame past ``max_bytes`` gets AR and the connection closes; a message with more
    segments or a longer field than ``limits`` gets AR; a connection that delivers no complete
    frame for ``idle_timeout`` seconds is closed (what it had sent of a frame is
    dead-lettered); at most ``max_connections`` are open at once: one more first closes the
    connection that has waited longest without completing a frame (a sender that sends
    nothing, or a frame a byte at a time), and is itself closed at once only when every open
    connection is busy with a frame.
    """

    def __init__(
        self,
        bridge: V2Engine,
        *,
        visit_system: str | None = None,
        mrn_system: str | None = None,
        tables: V2Tables | None = None,
        max_bytes: int = 1 << 20,
        process: bool = True,
        limits: V2Limits | None = None,
        idle_timeout: float = 300.0,
        max_connections: int = 100,
    ) -> None:
        self.bridge = bridge
        self.adapter = V2Adapter(
            bridge, visit_system=visit_system, mrn_system=mrn_system, tables=tables
        )
        self.stats = V2Stats()
        self.max_bytes = max_bytes
        self.limits = limits or V2Limits()
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.refused = 0  # connections closed at once: max_connections were busy
        self.evicted = 0  # connections closed to admit another
        self._process = process
        self._wake = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._worker: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._peers: dict[asyncio.StreamWriter, _Peer] = {}
        self._closing = False
        self.retry_after = 30.0
        #: Seconds after which a listener that received nothing runs a pass anyway (None:
        #: never). For a worker among several on a shared journal: the versions of its
        #: lanes that the other workers journalled are its to evaluate and write.
        self.idle_pass: float | None = None

    @classmethod
    def from_config(
        cls,
        bridge: V2Engine,
        config: Hl7Config,
        *,
        visit_system: str | None = None,
        mrn_system: str | None = None,
    ) -> MllpListener:
        """A listener bounded as the ``hl7`` configuration section says."""
        return cls(
            bridge,
            visit_system=visit_system,
            mrn_system=mrn_system,
            max_bytes=config.max_frame,
            limits=V2Limits(segments=config.max_segments, field=config.max_field),
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
        )

    async def start(self, host: str = "127.0.0.1", port: int = 2575) -> int:
        """Listen; returns the bound port (pass 0 for any free one)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        if self._process:
            self._worker = asyncio.create_task(self._work())
        return int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening, let open connections finish their message, then process and
        write what was journalled."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._connections:
            _, late = await asyncio.wait(self._connections, timeout=5.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._worker is not None:
            self._closing = True
            self._wake.set()
            await self._worker  # it finishes the pass under way, then one more

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = _Peer(asyncio.get_running_loop().time())
        try:
            if len(self._peers) >= self.max_connections and not self._evict():
                self.refused += 1
                log.warning("mllp_connection_refused", open=len(self._peers))
                return
            self._peers[writer] = peer
            if task is not None:
                self._connections.add(task)
                task.add_done_callback(self._connections.discard)
            await self._frames(reader, writer, peer)
        except (ConnectionError, TimeoutError):
            return  # the peer went away or stopped reading its ACKs
        finally:
            self._peers.pop(writer, None)
            with contextlib.suppress(OSError):
                writer.close()
                await writer.wait_closed()

    def _evict(self) -> bool:
        """Close the connection that has waited longest for a complete frame."""
        idle = [(p.waiting_since, w) for w, p in self._peers.items() if p.waiting_since is not None]
        if not idle:
            return False
        _, writer = min(idle, key=lambda item: item[0])
        self._peers[writer].evicted = True
        self._peers[writer].waiting_since = None
        self.evicted += 1
        log.info("mllp_connection_evicted", open=len(self._peers))
        writer.close()
        return True

    async def _frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: _Peer
    ) -> None:
        """Answer each frame; return (closing the connection) at EOF, on an oversized frame,
        or when no complete frame arrived for ``idle_timeout`` seconds."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        deadline = loop.time() + self.idle_timeout
        while True:
            while (end := buffer.find(END + b"\r")) >= 0 and end < self.max_bytes + 2:
                frame = bytes(buffer[: end + 2])
                del buffer[: end + 2]
                peer.waiting_since = None  # busy: not to be evicted mid-frame
                writer.write(START + await self._answer(frame) + END + b"\r")
                async with asyncio.timeout(self.idle_timeout):
                    await writer.drain()
                deadline = loop.time() + self.idle_timeout
                peer.waiting_since = loop.time()
            if len(buffer) > self.max_bytes:
                reason = f"message larger than {self.max_bytes} bytes"
                self._unframed(bytes(buffer), reason)
                ack = build_ack(None, "AR", reason, self.bridge.clock.now())
                writer.write(START + ack + END + b"\r")
                async with asyncio.timeout(self.idle_timeout):
                    await writer.drain()
                return
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await reader.read(65536)
            except TimeoutError:
                self._unframed(bytes(buffer), f"no complete frame within {self.idle_timeout:g} s")
                return
            if not chunk:
                reason = (
                    "closed to admit another connection"
                    if peer.evicted
                    else "the connection closed in the middle of a frame"
                )
                self._unframed(bytes(buffer), reason)
                return
            buffer += chunk

    def _unframed(self, data: bytes, reason: str) -> None:
        """Dead-letter what a connection sent that never became a frame (if anything)."""
        if not data.strip(b"\r\n\t \x00"):
            return
        log.warning("mllp_frame_incomplete", reason=reason, size=len(data))
        try:
            self.bridge.store.dead_letter(SOURCE, "?", reason, data[: self.max_bytes])
        except StoreError as exc:
            log.error("dead_letter_failed", error=str(exc))

    async def _answer(self, frame: bytes) -> bytes:
        """The ACK for one frame (never an exception: the connection outlives the frame)."""
        body = frame[frame.rfind(START) + 1 : -2]
        messages = split_messages(body)
        now = self.bridge.clock.now()
        message = messages[0] if messages else None
        try:
            if message is None or len(messages) != 1:
                count = len(messages)
                raise V2Error("", f"a frame must hold exactly one message, this one holds {count}")
            check_frame(message.text, self.limits)
            outcome = await self.adapter.handle(message)
        except V2Error as exc:  # beyond the bounds or not one message: refused before reading
            outcome = self._refuse(body, exc.message)
        except (FhirError, StoreError) as exc:  # nothing journalled: the sender should resend
            log.warning("hl7_not_journalled", error=type(exc).__name__)
            return build_ack(message, "AE", f"temporary failure, resend: {exc.message}", now)
        except Exception as exc:  # a message no rule foresaw must not cost the connection
            log.error("hl7_unreadable", error=type(exc).__name__)
            outcome = self._refuse(body, f"the message cannot be read ({type(exc).__name__})")
        self.stats.count(outcome)
        if outcome.versions:
            self._wake.set()
        return build_ack(message, outcome.ack, outcome.reason, now)

    def _refuse(self, body: bytes, reason: str) -> Outcome:
        """AR for a frame, kept as a dead letter (when the journal takes it)."""
        try:
            self.bridge.store.dead_letter(SOURCE, "?", reason, body)
        except StoreError as exc:
            log.error("dead_letter_failed", error=str(exc))
        return Outcome("", "AR", reason)

    async def _work(self) -> None:
        while not self._closing:
            if self.idle_pass is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_pass)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        try:
            self.stats.add(await self.bridge.run_pass())
        except FhirBridgeError as exc:  # the versions stay pending: try again later
            log.warning("hl7_processing_failed", error=type(exc).__name__)
            if not self._closing:
                asyncio.get_running_loop().call_later(self.retry_after, self._wake.set)
